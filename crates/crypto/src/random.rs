use crate::CryptoError;
use ring::rand::{SecureRandom, SystemRandom};

/// Where random bytes come from. Passed in, so tests may substitute their own.
pub trait RandomSource: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError>;

    fn bytes<const N: usize>(&self) -> Result<[u8; N], CryptoError>
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Clone)]
pub struct SystemRandomSource(SystemRandom);

impl SystemRandomSource {
    pub fn new() -> Self {
        Self(SystemRandom::new())
    }
}

impl RandomSource for SystemRandomSource {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        self.0.fill(buf).map_err(|_| CryptoError::Random)
    }
}

impl Default for SystemRandomSource {
    fn default() -> Self {
        Self::new()
    }
}
