use crate::access::Role;

/// How long sign-ins and their tokens last, and how failed attempts are slowed down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInPolicy {
    /// Lifetime of an access token issued by `/token`.
    pub access_token_secs: i64,
    /// A session nobody refreshed for this long ends (its refresh token stops working, and
    /// so do its access tokens).
    pub idle_timeout_secs: i64,
    /// A session ends this long after sign-in, however active.
    pub session_lifetime_secs: i64,
    /// Lifetime of an authorization code.
    pub code_secs: i64,
    /// Lifetime of the signed ticket between the login page and the consent screen.
    pub ticket_secs: i64,
    /// Failed attempts before an account is locked.
    pub lockout_after: i64,
    /// The first lock's length; each further failure doubles it, up to `lockout_max_secs`.
    pub lockout_base_secs: i64,
    pub lockout_max_secs: i64,
    /// Roles that must present a TOTP code at sign-in.
    pub mfa_roles: Vec<Role>,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        Self {
            access_token_secs: 15 * 60,
            idle_timeout_secs: 30 * 60,
            session_lifetime_secs: 12 * 60 * 60,
            code_secs: 60,
            ticket_secs: 5 * 60,
            lockout_after: 5,
            lockout_base_secs: 60,
            lockout_max_secs: 60 * 60,
            mfa_roles: Role::ALL.iter().copied().filter(|r| *r != Role::Patient).collect(),
        }
    }
}

impl SignInPolicy {
    /// How long an account stays locked after its `failed`-th failed attempt (0: not locked).
    pub fn lock_secs(&self, failed: i64) -> i64 {
        if failed < self.lockout_after {
            return 0;
        }
        let doublings = (failed - self.lockout_after).min(20) as u32;
        self.lockout_base_secs
            .saturating_mul(1i64 << doublings)
            .min(self.lockout_max_secs)
    }
}
