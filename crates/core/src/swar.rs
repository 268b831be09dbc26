//! Word-at-a-time byte tests ("SIMD within a register"): the scan for bytes
//! to escape in JSON strings looks at eight bytes per step (newlines are
//! found with `memchr`). Each test is exact for the word as a whole (a borrow only
//! starts at a byte that matches).

/// 0x01 in every byte.
const LO: u64 = 0x0101_0101_0101_0101;
/// 0x80 in every byte.
const HI: u64 = 0x8080_8080_8080_8080;

/// `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    LO * b as u64
}

/// The first eight bytes of `b` as a little-endian word.
#[inline]
pub(crate) fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Whether any byte of `v` is below `n` (`n` at most 128).
#[inline]
pub(crate) fn has_byte_below(v: u64, n: u8) -> bool {
    v.wrapping_sub(splat(n)) & !v & HI != 0
}

/// Whether any byte of `v` is `b`.
#[inline]
pub(crate) fn has_byte(v: u64, b: u8) -> bool {
    has_byte_below(v ^ splat(b), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tests_agree_with_a_byte_loop(bytes in proptest::array::uniform8(any::<u8>()), b in any::<u8>(), n in 0u8..=128) {
            let v = word(&bytes);
            prop_assert_eq!(has_byte(v, b), bytes.contains(&b));
            prop_assert_eq!(has_byte_below(v, n), bytes.iter().any(|&x| x < n));
        }
    }
}
