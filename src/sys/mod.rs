//! Every `unsafe` block and libc call of ssm-lite, behind small typed, safe functions.
//! STUB: interface fixed; implementation in progress.

/// A process (or process-group) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid(i32);

impl Pid {
    pub fn from_raw(raw: i32) -> Pid {
        Pid(raw)
    }
    pub fn as_raw(self) -> i32 {
        self.0
    }
}
