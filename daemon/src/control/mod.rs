//! The control socket, `/run/tapnet/NAME.sock` (mode 0600): how a running lab is
//! asked about and changed from outside its process.
//!
//! One request line per connection (`show ports`), one JSON reply, then close
//! ([`protocol`]). The lab serves it ([`server`]); `tapnet show`, `trace`, `impair`,
//! `capture` and `top` ask it ([`client`]).

pub mod client;
pub mod protocol;
pub mod server;
