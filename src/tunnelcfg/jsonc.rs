//! The comments Xray and V2Ray accept in their JSON configs (`//`, `/* */` and `#`, outside
//! strings), blanked out so that serde_json can read the rest.

use std::borrow::Cow;

/// `text` with every comment replaced by spaces (newlines kept), so that the line and column of
/// a JSON error still point into the original file. Borrowed when the text has no comment.
pub(super) fn blank_comments(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let end = match (b, bytes.get(i + 1)) {
            (b'"', _) => {
                in_string = true;
                i += 1;
                continue;
            }
            (b'#', _) | (b'/', Some(b'/')) => line_end(bytes, i),
            (b'/', Some(b'*')) => block_end(bytes, i + 2),
            _ => {
                i += 1;
                continue;
            }
        };
        let buf = out.get_or_insert_with(|| bytes.to_vec());
        for byte in &mut buf[i..end] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        i = end;
    }
    match out {
        // Only whole comments (all their bytes) became ASCII spaces: still UTF-8.
        Some(buf) => Cow::Owned(String::from_utf8(buf).expect("blanking keeps UTF-8")),
        None => Cow::Borrowed(text),
    }
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |n| from + n)
}

/// The end of a `/* */` comment whose body starts at `from`; an unclosed one runs to the end,
/// as it does in the cores' reader.
fn block_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .windows(2)
        .position(|w| w == b"*/")
        .map_or(bytes.len(), |n| from + n + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_comments_is_borrowed() {
        let text = r#"{"a": "http://x/#y", "b": "/* no */ \" // still a string"}"#;
        assert!(matches!(blank_comments(text), Cow::Borrowed(_)));
    }

    #[test]
    fn comments_become_spaces_and_newlines_stay() {
        let text = "{ // état\n\"a\": 1, # hash\n/* multi\nline */ \"b\": \"#\" }";
        let blanked = blank_comments(text);
        assert_eq!(blanked.len(), text.len());
        assert_eq!(blanked.lines().count(), text.lines().count());
        let value: serde_json::Value = serde_json::from_str(&blanked).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1, "b": "#"}));
    }

    #[test]
    fn unclosed_block_comment_runs_to_the_end() {
        assert_eq!(blank_comments("1 /* open"), "1        ");
    }
}
