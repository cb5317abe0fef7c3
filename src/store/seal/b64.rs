//! Standard base64 (RFC 4648, padded) of sealed texts, 12 bytes to 16 characters at a time with
//! SSSE3 where the CPU has it (detected at run time; W. Muła and D. Lemire, "Faster Base64
//! Encoding and Decoding using AVX2 Instructions", ACM TOPS 2018, in its SSE form), the `base64`
//! crate for the rest of a text and on other CPUs. Same output, same strictness (canonical
//! padding, every character of the alphabet), checked against the crate by the tests below. The
//! base64 crate's scalar code was about 2.5% of the node's instructions.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Appends the base64 of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        let mut buf = std::mem::take(out).into_bytes();
        // SAFETY: the CPU has SSSE3 (checked above); `encode` appends only characters of the
        // base64 alphabet and `=`, so `buf` stays UTF-8.
        unsafe {
            x86::encode(bytes, &mut buf);
            *out = String::from_utf8_unchecked(buf);
        }
        return;
    }
    B64.encode_string(bytes, out);
}

/// The bytes of the base64 text `text`, or `None` if it is not canonical padded base64.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3.
        return unsafe { x86::decode(text) };
    }
    B64.decode(text).ok()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Appends the base64 of `bytes` to `out`: 12 bytes at a time while 16 can be loaded, then
    /// the rest from a zeroed copy, its padding put in place.
    #[target_feature(enable = "ssse3")]
    pub unsafe fn encode(bytes: &[u8], out: &mut Vec<u8>) {
        // Room for every character, and for two whole stores past them.
        out.reserve(bytes.len().div_ceil(3) * 4 + 32);
        let mut i = 0;
        while i + 16 <= bytes.len() {
            let chars = lookup(unpack(_mm_loadu_si128(bytes.as_ptr().add(i).cast())));
            store(out, chars, 16);
            i += 12;
        }
        let r = bytes.len() - i;
        if r == 0 {
            return;
        }
        let mut rest = [0u8; 32];
        rest[..r].copy_from_slice(&bytes[i..]);
        let n = r.div_ceil(3) * 4;
        let first = lookup(unpack(_mm_loadu_si128(rest.as_ptr().cast())));
        if r > 12 {
            store(out, first, 16);
            let second = lookup(unpack(_mm_loadu_si128(rest.as_ptr().add(12).cast())));
            store(out, second, n - 16);
        } else {
            store(out, first, n);
        }
        let end = out.len();
        match r % 3 {
            1 => out[end - 2..].copy_from_slice(b"=="),
            2 => out[end - 1] = b'=',
            _ => {}
        }
    }

    /// Writes the 16 bytes of `v` after `out`'s end and keeps `n` of them.
    #[target_feature(enable = "ssse3")]
    unsafe fn store(out: &mut Vec<u8>, v: __m128i, n: usize) {
        let at = out.len();
        assert!(out.capacity() >= at + 16 && n <= 16);
        _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), v);
        out.set_len(at + n);
    }

    /// Each 3 bytes of the first 12 of `input` as four 6-bit indices, one per byte.
    #[target_feature(enable = "ssse3")]
    unsafe fn unpack(input: __m128i) -> __m128i {
        let input = _mm_shuffle_epi8(
            input,
            _mm_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1),
        );
        let t0 = _mm_and_si128(input, _mm_set1_epi32(0x0fc0_fc00));
        let t1 = _mm_mulhi_epu16(t0, _mm_set1_epi32(0x0400_0040));
        let t2 = _mm_and_si128(input, _mm_set1_epi32(0x003f_03f0));
        let t3 = _mm_mullo_epi16(t2, _mm_set1_epi32(0x0100_0010));
        _mm_or_si128(t1, t3)
    }

    /// 6-bit indices to the characters of the standard alphabet.
    #[target_feature(enable = "ssse3")]
    unsafe fn lookup(indices: __m128i) -> __m128i {
        let mut result = _mm_subs_epu8(indices, _mm_set1_epi8(51));
        let less = _mm_cmpgt_epi8(_mm_set1_epi8(26), indices);
        result = _mm_or_si128(result, _mm_and_si128(less, _mm_set1_epi8(13)));
        let shift = _mm_setr_epi8(
            (b'a' - 26) as i8,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'0' as i8) - 52,
            (b'+' as i8) - 62,
            (b'/' as i8) - 63,
            b'A' as i8,
            0,
            0,
        );
        result = _mm_shuffle_epi8(shift, result);
        _mm_add_epi8(result, indices)
    }

    /// The bytes of `text` (a multiple of 4 characters), or `None` if it is not canonical
    /// padded base64: 16 characters at a time, the last 4 to 16 from a copy where the padding
    /// is `A` (0), its trailing bits checked.
    #[target_feature(enable = "ssse3")]
    pub unsafe fn decode(text: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len() / 4 * 3 + 16);
        if text.is_empty() {
            return Some(out);
        }
        let mut i = 0;
        while i + 16 + 4 <= text.len() {
            let values = translate(_mm_loadu_si128(text.as_ptr().add(i).cast()))?;
            store(&mut out, pack(values), 12);
            i += 16;
        }
        let rest = &text[i..];
        let pads = if rest.ends_with(b"==") {
            2
        } else {
            usize::from(rest.ends_with(b"="))
        };
        let mut chars = [b'A'; 16];
        chars[..rest.len() - pads].copy_from_slice(&rest[..rest.len() - pads]);
        let values = translate(_mm_loadu_si128(chars.as_ptr().cast()))?;
        let mut bytes = [0u8; 16];
        _mm_storeu_si128(bytes.as_mut_ptr().cast(), pack(values));
        let n = rest.len() / 4 * 3 - pads;
        // Canonical: the bits of the last character that fall into no byte are zero.
        if pads > 0 && bytes[n] != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..n]);
        Some(out)
    }

    /// Characters to their 6-bit values, or `None` if one is not of the standard alphabet.
    #[target_feature(enable = "ssse3")]
    unsafe fn translate(input: __m128i) -> Option<__m128i> {
        let lut_lo = _mm_setr_epi8(
            0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B,
            0x1B, 0x1A,
        );
        let lut_hi = _mm_setr_epi8(
            0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
            0x10, 0x10,
        );
        let lut_roll = _mm_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
        let nibble = _mm_set1_epi8(0x0f);
        let hi_nibbles = _mm_and_si128(_mm_srli_epi32(input, 4), nibble);
        let lo_nibbles = _mm_and_si128(input, nibble);
        let lo = _mm_shuffle_epi8(lut_lo, lo_nibbles);
        let hi = _mm_shuffle_epi8(lut_hi, hi_nibbles);
        if _mm_movemask_epi8(_mm_cmpgt_epi8(_mm_and_si128(lo, hi), _mm_setzero_si128())) != 0 {
            return None;
        }
        let eq_2f = _mm_cmpeq_epi8(input, _mm_set1_epi8(0x2f));
        let roll = _mm_shuffle_epi8(lut_roll, _mm_add_epi8(eq_2f, hi_nibbles));
        Some(_mm_add_epi8(input, roll))
    }

    /// Sixteen 6-bit values to 12 bytes (the first 12 of the result).
    #[target_feature(enable = "ssse3")]
    unsafe fn pack(values: __m128i) -> __m128i {
        let merged = _mm_maddubs_epi16(values, _mm_set1_epi32(0x0140_0140));
        let packed = _mm_madd_epi16(merged, _mm_set1_epi32(0x0001_1000));
        _mm_shuffle_epi8(
            packed,
            _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(bytes: &[u8]) -> String {
        let mut out = String::from("\"");
        encode_into(bytes, &mut out);
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn encodes_and_decodes_as_the_base64_crate(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let text = B64.encode(&bytes);
            proptest::prop_assert_eq!(encoded(&bytes), format!("\"{text}"));
            proptest::prop_assert_eq!(decode(text.as_bytes()), Some(bytes));
        }

        /// Any text (mostly of the alphabet, some bytes changed): decoded exactly when, and to
        /// what, the crate decodes it.
        #[test]
        fn refuses_what_the_base64_crate_refuses(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            changes in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 0..3),
            cut in 0usize..3,
        ) {
            let mut text = B64.encode(&bytes).into_bytes();
            for (at, byte) in changes {
                if !text.is_empty() {
                    let n = text.len();
                    text[at % n] = byte;
                }
            }
            text.truncate(text.len().saturating_sub(cut));
            proptest::prop_assert_eq!(decode(&text), B64.decode(&text).ok());
        }
    }

    #[test]
    fn every_byte_in_every_place_of_a_text_decodes_as_the_crate_says() {
        // No padding, `=`, `==`; whole blocks and the rest, and the rest alone.
        for len in [30, 31, 32, 7, 8, 1] {
            let base = B64.encode(vec![0x5au8; len]).into_bytes();
            for at in 0..base.len() {
                for byte in 0..=255u8 {
                    let mut text = base.clone();
                    text[at] = byte;
                    assert_eq!(
                        decode(&text),
                        B64.decode(&text).ok(),
                        "{byte:#x} at {at} of {len} bytes"
                    );
                }
            }
        }
    }
}
