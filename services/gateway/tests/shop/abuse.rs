//! Slow and abusive clients: timeouts, the connection cap, clients behind proxies and
//! sign-in throttling.

#[allow(unused_imports)]
use super::*;
