//! Plain words out of an error body that is not JSON: the HTML error page of a proxy
//! (`<html><head><title>502 Bad Gateway</title></head><body>…<center>nginx</center>…`),
//! or a text dump. The result is meant to be stored and shown to people, so it holds no
//! markup, no line breaks or control characters, and no more than a few words.
//!
//! A small scanner rather than an HTML parser: it only has to find the visible words of
//! an error page. The lean crates that do this panic on some inputs (an empty tag `<>`),
//! and a browser-grade parser (html5ever) is far too heavy for a client library.

/// Elements whose content a browser does not show as page text. `head` holds the
/// `title`, which is used when the body has no words at all.
const HIDDEN_ELEMENTS: [&str; 5] = ["head", "script", "style", "template", "noscript"];

/// Longest entity name we decode (`&nbsp;` and friends), in bytes.
const MAX_ENTITY_LEN: usize = 10;

/// The visible words of `body`, markup removed, whitespace collapsed to single spaces,
/// at most `max_chars` characters (cut at a character boundary, ending in `…` when cut).
/// Empty when the body has no visible words. Never panics.
pub(crate) fn plain_text(body: &str, max_chars: usize) -> String {
    let text = visible_words(body, max_chars);
    if !text.is_empty() {
        return text;
    }
    // A page made only of a title (or whose body is all markup).
    title(body)
        .map(|t| visible_words(t, max_chars))
        .unwrap_or_default()
}

/// The words outside hidden elements and tags.
fn visible_words(body: &str, max_chars: usize) -> String {
    // ASCII lowercasing keeps every byte offset, so indices found in `lower` apply to `body`.
    let lower = body.to_ascii_lowercase();
    let mut out = Words::new(max_chars);
    let mut i = 0;
    while i < body.len() && !out.is_full() {
        let Some(c) = body[i..].chars().next() else {
            break;
        };
        match c {
            '<' => match markup_end(&lower, i) {
                Some((end, hidden)) => {
                    out.space();
                    i = match hidden {
                        Some(name) => element_end(&lower, end, name),
                        None => end,
                    };
                }
                None => {
                    out.push('<');
                    i += 1;
                }
            },
            '&' => match entity(&body[i..]) {
                Some((decoded, len)) => {
                    out.push(decoded);
                    i += len;
                }
                None => {
                    out.push('&');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out.finish()
}

/// When a `<` at `start` opens markup (a tag, a comment, a declaration), the offset just
/// past it, and the name of the hidden element it opens, if it does. `None` when the `<`
/// is ordinary text (`a < b`).
fn markup_end(lower: &str, start: usize) -> Option<(usize, Option<&'static str>)> {
    let after = &lower[start + 1..];
    if let Some(comment) = after.strip_prefix("!--") {
        let end = comment
            .find("-->")
            .map_or(lower.len(), |e| start + 1 + 3 + e + 3);
        return Some((end, None));
    }
    if !after
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'))
    {
        return None;
    }
    let (tag, end) = match tag_close(after) {
        Some(e) => (&after[..e], start + 1 + e + 1),
        None => (after, lower.len()),
    };
    let name_len = tag
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let hidden = HIDDEN_ELEMENTS
        .iter()
        .find(|h| **h == &tag[..name_len])
        .copied()
        .filter(|_| !tag.ends_with('/'));
    Some((end, hidden))
}

/// The offset of the `>` that ends a tag whose text starts `tag`, skipping any inside
/// quoted attribute values (`<a title='x>y'>`).
fn tag_close(tag: &str) -> Option<usize> {
    let mut quote = None;
    for (i, b) in tag.bytes().enumerate() {
        match (quote, b) {
            (None, b'>') => return Some(i),
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            _ => {}
        }
    }
    None
}

/// The offset just past the closing tag of element `name`, whose content starts at `from`
/// (the end of the input when it is never closed).
fn element_end(lower: &str, from: usize, name: &str) -> usize {
    let close = format!("</{name}");
    match lower[from..].find(&close) {
        Some(e) => {
            let at = from + e;
            lower[at..].find('>').map_or(lower.len(), |g| at + g + 1)
        }
        None => lower.len(),
    }
}

/// The raw content of the first `<title>` element, if any.
fn title(body: &str) -> Option<&str> {
    let lower = body.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = lower[start..]
        .find("</title")
        .map_or(body.len(), |e| start + e);
    Some(&body[start..end])
}

/// The character an entity at the start of `s` (`&amp;`, `&#39;`, `&#x2F;`) stands for,
/// and the entity's length in bytes. Only the entities error pages use are known; any
/// other `&` is text.
fn entity(s: &str) -> Option<(char, usize)> {
    // Only the next few bytes: a body of many `&` must not be scanned once per `&`.
    let semi = s
        .bytes()
        .take(MAX_ENTITY_LEN + 2)
        .skip(1)
        .position(|b| b == b';')?
        + 1;
    let name = &s[1..semi];
    let decoded = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((decoded, semi + 1))
}

/// Whether `c` is dropped from the text: format characters that reorder or hide text
/// (bidirectional overrides, zero-width characters, the byte order mark).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// Collects words: whitespace and control characters become one space between words,
/// and collection stops one character past `max` (so a cut is known).
struct Words {
    text: String,
    chars: usize,
    max: usize,
    pending_space: bool,
}

impl Words {
    fn new(max: usize) -> Self {
        Words {
            text: String::new(),
            chars: 0,
            max,
            pending_space: false,
        }
    }

    fn is_full(&self) -> bool {
        self.chars > self.max
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() || c.is_control() {
            self.space();
            return;
        }
        if is_invisible(c) || self.is_full() {
            return;
        }
        if self.pending_space && !self.text.is_empty() {
            self.text.push(' ');
            self.chars += 1;
        }
        self.pending_space = false;
        self.text.push(c);
        self.chars += 1;
    }

    fn finish(self) -> String {
        if self.chars <= self.max {
            return self.text;
        }
        if self.max == 0 {
            return String::new();
        }
        let mut cut: String = self.text.chars().take(self.max - 1).collect();
        cut.truncate(cut.trim_end().len());
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

    #[test]
    fn an_nginx_error_page_becomes_its_words() {
        assert_eq!(plain_text(NGINX_502, 200), "502 Bad Gateway nginx");
    }

    #[test]
    fn scripts_styles_and_comments_are_not_text() {
        let page = "<!DOCTYPE html><html><head><style>body{color:red}</style>\
            <script>alert('x')</script></head><body><!-- secret --><p>Service &amp; \
            API <b>down</b></p><script type=\"x\">var a = '<p>';</script>&#39;later&#x27;</body></html>";
        assert_eq!(plain_text(page, 200), "Service & API down 'later'");
    }

    #[test]
    fn a_title_only_page_gives_its_title() {
        assert_eq!(
            plain_text(
                "<html><head><title>Gateway Timeout</title></head></html>",
                200
            ),
            "Gateway Timeout"
        );
    }

    #[test]
    fn plain_text_and_odd_markup() {
        assert_eq!(plain_text("Bad Gateway\n", 200), "Bad Gateway");
        assert_eq!(plain_text("a < b && c > d", 200), "a < b && c > d");
        assert_eq!(plain_text("<>x</>", 200), "<>x");
        assert_eq!(plain_text("<p unclosed", 200), "");
        assert_eq!(plain_text("x<script>never closed", 200), "x");
        assert_eq!(
            plain_text("&#xZZ; &#99999999; &bogus;", 200),
            "&#xZZ; &#99999999; &bogus;"
        );
        assert_eq!(plain_text("a\u{202E}b\u{200B}c", 200), "abc");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(300);
        let cut = plain_text(&text, 200);
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with('…'));
        assert_eq!(plain_text("word ".repeat(10).as_str(), 12), "word word w…");
        assert_eq!(plain_text("abc", 0), "");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_short_and_plain(body in any::<String>(), max in 0usize..300) {
            let text = plain_text(&body, max);
            prop_assert!(text.chars().count() <= max);
            prop_assert!(!text.chars().any(|c| c.is_control() || c == '\n'));
            prop_assert_eq!(text.trim(), text.as_str());
            prop_assert!(!text.contains("  "));
        }

        #[test]
        fn markup_around_words_leaves_just_the_words(
            words in proptest::collection::vec("[a-zA-Z0-9.,:!?-]{1,12}", 1..20),
            tags in proptest::collection::vec(
                prop::sample::select(vec!["p", "div", "center", "h1", "b", "span", "td"]), 20),
            attrs in any::<bool>(),
        ) {
            let mut page = String::from("<html><head><title>t</title><style>x{}</style></head><body>");
            for (word, tag) in words.iter().zip(tags.iter().cycle()) {
                let open = if attrs { format!("<{tag} class=\"a b\" id='x>'>") } else { format!("<{tag}>") };
                page.push_str(&format!("{open}{word}</{tag}>\r\n"));
            }
            page.push_str("</body></html>");
            prop_assert_eq!(plain_text(&page, 10_000), words.join(" "));
        }

        #[test]
        fn text_without_markup_keeps_its_words(text in "[^<&]{0,400}") {
            let want: Vec<&str> = text
                .split(|c: char| c.is_whitespace() || c.is_control())
                .filter(|w| !w.is_empty())
                .collect();
            let got = plain_text(&text, 10_000);
            let got_words: Vec<String> = got.split(' ').filter(|w| !w.is_empty()).map(|w| w.chars().filter(|c| !is_invisible(*c)).collect()).collect();
            let want_words: Vec<String> = want.iter().map(|w| w.chars().filter(|c| !is_invisible(*c)).collect::<String>()).filter(|w| !w.is_empty()).collect();
            prop_assert_eq!(got_words, want_words);
        }
    }
}
