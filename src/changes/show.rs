//! Changes as `sbox diff` and `sbox commit` print them: names escaped for
//! a terminal, JSON without terminal controls, modes like `ls -l`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as JSON, losslessly: the string when it is UTF-8 (JSON escapes
/// control characters itself), else its bytes.
pub(crate) fn path_json<S: serde::Serializer>(
    p: &Path,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match p.to_str() {
        Some(t) => s.serialize_str(t),
        None => s.collect_seq(p.as_os_str().as_bytes()),
    }
}

/// `bytes` fit for a terminal, like `ls -b`: backslash doubled, `\a \b \t
/// \n \v \f \r` as such, other control characters, invisible formatting
/// characters (bidi overrides, zero-width ones) and bytes that are not
/// UTF-8 as `\ooo` (octal, one per byte); printable text as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let octal = |out: &mut String, b: u8| out.push_str(&format!("\\{b:03o}"));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || invisible(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        octal(&mut out, b);
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            octal(&mut out, *b);
        }
    }
    out
}

/// Format characters that change how the text around them shows.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}')
}

/// A path fit for a terminal (see [`escape`]).
pub fn show(p: &Path) -> String {
    escape(p.as_os_str().as_bytes())
}

/// JSON text with the characters a terminal acts on that serde_json
/// leaves as they are (DEL, C1 controls, invisible formatting) written as
/// `\uXXXX`: they can only be inside strings, which decode the same.
pub fn json_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Below U+0020 serde_json escapes what is in strings: the rest is
        // the layout's own whitespace.
        if (c.is_control() && c >= '\u{7f}') || invisible(c) {
            // All of them are in the basic plane: one escape each.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `ls -l`'s mode column: the type and the permission bits.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::from(t);
    for (i, (r, w, x, special, on, off)) in [
        ('r', 'w', 'x', libc::S_ISUID, 's', 'S'),
        ('r', 'w', 'x', libc::S_ISGID, 's', 'S'),
        ('r', 'w', 'x', libc::S_ISVTX, 't', 'T'),
    ]
    .into_iter()
    .enumerate()
    {
        let bits = (mode >> (6 - 3 * i)) & 7;
        s.push(if bits & 4 != 0 { r } else { '-' });
        s.push(if bits & 2 != 0 { w } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => x,
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{Change, Kind};
    use std::ffi::OsStr;
    use std::path::PathBuf;

    #[test]
    fn names_are_escaped_like_ls_b() {
        assert_eq!(escape(b"plain name-1.txt"), "plain name-1.txt");
        assert_eq!(escape(b"a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(escape(b"\x1b[31m\x7f\x00"), "\\033[31m\\177\\000");
        assert_eq!(escape(b"bad\xff\xc3"), "bad\\377\\303");
        assert_eq!(
            escape("caf\u{e9} \u{65e5}".as_bytes()),
            "caf\u{e9} \u{65e5}"
        );
        // C1 controls and bidi overrides, byte by byte.
        assert_eq!(
            escape("x\u{9b}y\u{202e}z".as_bytes()),
            "x\\302\\233y\\342\\200\\256z"
        );
    }

    #[test]
    fn json_stays_the_same_data_without_terminal_controls() {
        let name = "a\u{9b}b\u{202e}c\u{7f}\n\u{1b}";
        let text = serde_json::to_string_pretty(&vec![name]).expect("json");
        let safe = json_for_terminal(&text);
        assert!(
            safe.chars()
                .all(|c| (!c.is_control() || c == '\n') && !invisible(c)),
            "{safe}"
        );
        let back: Vec<String> = serde_json::from_str(&safe).expect("parse");
        assert_eq!(back, [name]);
        let bytes = Change {
            kind: Kind::A,
            path: PathBuf::from(OsStr::from_bytes(b"/x\xff")),
        };
        assert_eq!(
            serde_json::to_string(&bytes).expect("json"),
            r#"{"kind":"A","path":[47,120,255]}"#
        );
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o6754), "-rwsr-sr--");
        assert_eq!(mode_string(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    }
}
