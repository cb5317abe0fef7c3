//! Small JSON writing helpers for the hot paths (replies, documents, event data): byte for byte
//! what serde_json writes (compact), into a `Vec<u8>`, faster where a string needs no escaping.

use serde_json::Value;

/// A JSON string, quoted and escaped exactly as serde_json escapes it (`"`, `\\` and control
/// characters; nothing else).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.iter().any(|&b| ESCAPE[b as usize]) {
        return serialize(out, s);
    }
    // One reservation, then plain copies: most strings here are a few bytes long (keys, ids).
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// The bytes that serde_json escapes inside a string.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A JSON value, compact; strings through [`write_str`].
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        other => serialize(out, other),
    }
}

/// serde_json's compact form of anything that serialises without failing (writing to a
/// `Vec` cannot fail, and neither can JSON values or plain structs).
pub fn serialize<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("serialising into memory cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_serde_json_writes() {
        for v in [
            json!("a\"b\\c\u{1}d\u{7f}é\n"),
            json!(""),
            json!("plain"),
            json!("\u{0}\u{1f} \u{2028}"),
            json!(null),
            json!(-1.5e300),
            json!(18446744073709551615u64),
            json!({"k\"": ["x\n", {"y": true}]}),
        ] {
            let mut out = Vec::new();
            write_value(&mut out, &v);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }
}
