//! The load generator as a library: the binary's command line drives it, and the gateway's
//! tests drive it against an in-process shop, so the shoppers it plays stay in step with the API.

pub mod config;
pub mod flash_sale;
pub mod hello;
mod http;
pub mod lanes;
mod mix;
pub mod report;
pub mod run;
mod shop;
