//! What the `tapnet` binary does itself: rendering a running lab's answers for a
//! person (`show` tables, `top`). The lab file is the `lab` crate's; building,
//! running and asking a lab is the `daemon` crate's.

pub mod render;
pub mod top;
