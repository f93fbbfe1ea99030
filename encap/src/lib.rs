//! encap
