//! Linux errno names for messages: one table (include/uapi/asm-generic/errno-base.h and
//! errno.h; the numbers are the same on every architecture migscope runs on). The core has no
//! libc; `migscope`'s tests hold this table to libc's constants.

/// The errno values migscope names, with their names.
pub const NAMES: [(i32, &str); 15] = [
    (1, "EPERM"),
    (2, "ENOENT"),
    (5, "EIO"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (14, "EFAULT"),
    (16, "EBUSY"),
    (19, "ENODEV"),
    (22, "EINVAL"),
    (25, "ENOTTY"),
    (42, "ENOMSG"),
    (61, "ENODATA"),
    (95, "EOPNOTSUPP"),
    (110, "ETIMEDOUT"),
];

/// `EINVAL` for 22; `errno` for a value not in [`NAMES`].
pub fn name(errno: i32) -> &'static str {
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map_or("errno", |(_, s)| s)
}

/// The name of a negative return value (`-22` -> `EINVAL`), as ioctls and traces carry them.
pub fn name_of_ret(ret: i32) -> &'static str {
    name(ret.saturating_neg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_returns() {
        assert_eq!(name(22), "EINVAL");
        assert_eq!(name_of_ret(-5), "EIO");
        assert_eq!(name(4242), "errno");
        assert_eq!(name_of_ret(i32::MIN), "errno", "no overflow");
    }
}
