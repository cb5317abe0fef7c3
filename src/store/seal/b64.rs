//! Standard base64 (RFC 4648, padded) of sealed texts, with SIMD where the CPU has it: the
//! `base64-simd` crate (Nugine/simd: SSSE3, AVX2, NEON, detected at run time; the scalar
//! `base64` crate's code was about 2.5% of the node's instructions). Same output and the same
//! strictness as the `base64` crate (canonical padding, every character of the alphabet),
//! checked against it by the tests below.

use base64_simd::STANDARD;

#[cfg(test)]
use base64::engine::general_purpose::STANDARD as B64;
#[cfg(test)]
use base64::Engine as _;

/// Appends the base64 of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    STANDARD.encode_append(bytes, out);
}

/// The bytes of the base64 text `text`, or `None` if it is not canonical padded base64.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode_to_vec(text).ok()
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
