//! vrouter
