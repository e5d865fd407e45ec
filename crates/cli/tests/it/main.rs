//! carevault's black-box integration tests: one binary, every test against a spawned server
//! over real HTTPS, on SQLite and (when `CAREVAULT_TEST_POSTGRES_URL` is set) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod access;
mod audit;

mod canary;
mod capability;
mod cli;
mod crud;
mod errors;
mod export;
mod history;
mod import;
mod isolation;
mod search;
mod signin;
mod tamper;
mod transactions;
