//! End-to-end tests: real PostgreSQL, real sluice, real clients. One test
//! binary, so the shared cluster starts once per run.

mod audit;
mod bad_input;
mod clients;
mod gateway;
mod identity;
mod least_privilege;
mod masking;
mod plugins;
mod protocol;
mod startup;
mod telemetry;
mod upstream;
