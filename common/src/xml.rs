//! A strict reader and a writer for peergroup's small XML documents.
//!
//! Our formats are flat: one root element with a `version` attribute and text-only
//! children. Rather than trusting a general deserialiser (quick-xml + serde ignores the
//! root's name and accepts trailing content), this reader walks the events itself and
//! refuses anything outside that shape: a DOCTYPE, processing instructions, unknown,
//! missing or repeated elements, nested elements, stray text, custom entities, trailing
//! content, or a file over the size cap. Errors name the source and line.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;
use thiserror::Error;

/// Largest document accepted, in bytes. Invitations with six issuing links and RSA-3072
/// keys stay well under 64 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// How often a child element may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurs {
    /// Exactly once.
    Once,
    /// Zero times or once.
    Optional,
    /// Zero to the given number of times, order kept.
    Many(usize),
}

/// The shape of one document type: its root element and its children.
#[derive(Debug)]
pub struct Schema {
    /// Root element name.
    pub root: &'static str,
    /// The only `version` attribute value this reader understands.
    pub version: &'static str,
    /// Allowed children and how often each may occur.
    pub fields: &'static [(&'static str, Occurs)],
}

/// Errors from reading a document; each renders as one line naming the source.
#[derive(Debug, Error)]
pub enum XmlError {
    /// The input is empty.
    #[error("{source_name}: file is empty")]
    Empty {
        /// Where the document came from.
        source_name: String,
    },
    /// The input is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("{source_name}: {size} bytes is over the {max}-byte limit for a {root} document")]
    TooLarge {
        /// Where the document came from.
        source_name: String,
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
        /// The expected root.
        root: &'static str,
    },
    /// The input is not UTF-8.
    #[error("{source_name}: not UTF-8 text, so not a {root} document")]
    NotText {
        /// Where the document came from.
        source_name: String,
        /// The expected root.
        root: &'static str,
    },
    /// The document breaks the schema or XML itself.
    #[error("{source_name}:{line}: {message}")]
    Invalid {
        /// Where the document came from.
        source_name: String,
        /// 1-based line of the offending part.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A document that matched its schema: children in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from, for error messages.
    pub source_name: String,
    fields: Vec<(String, String, usize)>,
}

impl Document {
    /// Text of a child that occurs once (or `None` if an optional one is absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.0 == name).map(|f| f.1.as_str())
    }

    /// Text of every occurrence of a child, in document order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.0 == name)
            .map(|f| f.1.as_str())
            .collect()
    }

    /// The line a child started on, for error messages.
    pub fn line_of(&self, name: &str) -> usize {
        self.fields.iter().find(|f| f.0 == name).map(|f| f.2).unwrap_or(1)
    }

    /// Text of a required child; the schema guarantees presence for `Occurs::Once`.
    pub fn required(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }
}

/// Reads `bytes` as a document of `schema`, naming `source_name` in errors.
pub fn parse(source_name: &str, bytes: &[u8], schema: &Schema) -> Result<Document, XmlError> {
    let src = source_name.to_string();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(XmlError::Empty { source_name: src });
    }
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge {
            source_name: src,
            size: bytes.len(),
            max: MAX_DOCUMENT_BYTES,
            root: schema.root,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotText {
        source_name: src.clone(),
        root: schema.root,
    })?;
    let mut reader = Reader::from_str(text);
    // Not trim_text: it would trim around each entity too ("a &amp; b" -> "a&b").
    // A field's whole text is trimmed when it closes instead.
    reader.config_mut().trim_text(false);
    let line_at = |pos: u64| {
        let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(text.len());
        text.as_bytes()[..pos].iter().filter(|b| **b == b'\n').count() + 1
    };
    let invalid = |pos: u64, message: String| XmlError::Invalid {
        source_name: src.clone(),
        line: line_at(pos),
        message,
    };

    #[derive(PartialEq)]
    enum State {
        BeforeRoot,
        InRoot,
        InField,
        AfterRoot,
    }
    let mut state = State::BeforeRoot;
    let mut fields: Vec<(String, String, usize)> = Vec::new();
    let mut current: Option<(String, String, usize)> = None;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| invalid(reader.error_position(), format!("malformed XML: {e}")))?;
        // quick-xml reports `<a/>` as Empty; fold it into Start and remember it closed.
        let (event, self_closing) = match event {
            Event::Empty(e) => (Event::Start(e), true),
            other => (other, false),
        };
        match event {
            Event::Eof => break,
            Event::Empty(_) => unreachable!("folded into Start above"),
            Event::Comment(_) => {}
            Event::Decl(_) if state == State::BeforeRoot && fields.is_empty() => {}
            Event::Decl(_) | Event::PI(_) => {
                return Err(invalid(pos, "processing instructions are not allowed".into()));
            }
            Event::DocType(_) => {
                return Err(invalid(pos, "a DOCTYPE is not allowed".into()));
            }
            Event::Start(e) if state == State::BeforeRoot => {
                let name = e.name().as_ref().to_string();
                if name != schema.root {
                    return Err(invalid(
                        pos,
                        format!("root element is <{name}>, expected <{}>", schema.root),
                    ));
                }
                let mut version = None;
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| invalid(pos, format!("bad attribute: {e}")))?;
                    let key = attr.key.as_ref().to_string();
                    if key != "version" || version.is_some() {
                        return Err(invalid(pos, format!("unexpected attribute {key:?} on <{name}>")));
                    }
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| invalid(pos, format!("bad attribute: {e}")))?;
                    version = Some(value.into_owned());
                }
                match version.as_deref() {
                    Some(v) if v == schema.version => {}
                    Some(v) => {
                        return Err(invalid(
                            pos,
                            format!(
                                "unsupported {} version {v:?} (this tool reads {:?})",
                                schema.root, schema.version
                            ),
                        ));
                    }
                    None => return Err(invalid(pos, format!("<{name}> has no version attribute"))),
                }
                state = if self_closing { State::AfterRoot } else { State::InRoot };
            }
            Event::Start(e) if state == State::InRoot => {
                let name = e.name().as_ref().to_string();
                let Some((_, occurs)) = schema.fields.iter().find(|(n, _)| *n == name) else {
                    return Err(invalid(pos, format!("unknown element <{name}> in <{}>", schema.root)));
                };
                let count = fields.iter().filter(|f| f.0 == name).count();
                let max = match occurs {
                    Occurs::Once | Occurs::Optional => 1,
                    Occurs::Many(n) => *n,
                };
                if count >= max {
                    let what = if max == 1 {
                        "duplicate".to_string()
                    } else {
                        format!("more than {max}")
                    };
                    return Err(invalid(pos, format!("{what} <{name}> elements")));
                }
                if e.attributes().next().is_some() {
                    return Err(invalid(pos, format!("<{name}> takes no attributes")));
                }
                if self_closing {
                    fields.push((name, String::new(), line_at(pos)));
                } else {
                    current = Some((name, String::new(), line_at(pos)));
                    state = State::InField;
                }
            }
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                return Err(match (&state, &current) {
                    (State::InField, Some((parent, _, _))) => {
                        invalid(pos, format!("element <{name}> inside <{parent}> is not allowed"))
                    }
                    _ => invalid(pos, format!("trailing content after </{}>: <{name}>", schema.root)),
                });
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match (&state, current.as_mut()) {
                    (State::InField, Some(field)) => field.1.push_str(&content),
                    _ if content.trim().is_empty() => {}
                    (State::AfterRoot, _) => {
                        return Err(invalid(pos, format!("trailing content after </{}>", schema.root)));
                    }
                    (State::BeforeRoot, _) => {
                        return Err(invalid(pos, format!("not XML: expected a <{}> document", schema.root)));
                    }
                    _ => return Err(invalid(pos, "text outside any element".into())),
                }
            }
            Event::CData(t) => match (&state, current.as_mut()) {
                (State::InField, Some(field)) => field.1.push_str(&t.xml10_content()),
                _ => return Err(invalid(pos, "CDATA outside any element".into())),
            },
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => Cow::Owned(c.to_string()),
                        _ => return Err(invalid(pos, "invalid character reference".into())),
                    }
                } else {
                    let name = r.as_ref().to_string();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => Cow::Borrowed(s),
                        None => return Err(invalid(pos, format!("entity &{name}; is not allowed"))),
                    }
                };
                match (&state, current.as_mut()) {
                    (State::InField, Some(field)) => field.1.push_str(&resolved),
                    _ => return Err(invalid(pos, "text outside any element".into())),
                }
            }
            Event::End(_) => match state {
                State::InField => {
                    if let Some((name, text, line)) = current.take() {
                        fields.push((name, text.trim().to_string(), line));
                    }
                    state = State::InRoot;
                }
                State::InRoot => state = State::AfterRoot,
                _ => return Err(invalid(pos, "unexpected closing tag".into())),
            },
        }
    }
    match state {
        State::AfterRoot => {}
        State::BeforeRoot => {
            return Err(invalid(
                0,
                format!("no <{}> element: not a {} document", schema.root, schema.root),
            ));
        }
        _ => {
            return Err(invalid(
                text.len() as u64,
                format!("document ends before </{}>: the file is truncated", schema.root),
            ));
        }
    }
    for (name, occurs) in schema.fields {
        if *occurs == Occurs::Once && !fields.iter().any(|f| f.0 == *name) {
            return Err(invalid(0, format!("missing <{name}> element")));
        }
    }
    Ok(Document {
        source_name: src,
        fields,
    })
}

/// Builds a document: root with `version`, children in the order given, text escaped.
#[derive(Debug)]
pub struct Writer {
    out: String,
    root: &'static str,
}

impl Writer {
    /// Starts a document with an XML declaration and the root element.
    pub fn new(root: &'static str, version: &str) -> Self {
        let out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} version=\"{}\">\n",
            escape(version)
        );
        Writer { out, root }
    }

    /// Adds one text child.
    pub fn field(&mut self, name: &str, text: &str) -> &mut Self {
        self.out.push_str(&format!("  <{name}>{}</{name}>\n", escape(text)));
        self
    }

    /// Adds a child holding base64, wrapped at 76 columns like PEM so it mails well.
    pub fn base64_field(&mut self, name: &str, b64: &str) -> &mut Self {
        self.out.push_str(&format!("  <{name}>\n"));
        for chunk in b64.as_bytes().chunks(76) {
            self.out.push_str("    ");
            self.out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            self.out.push('\n');
        }
        self.out.push_str(&format!("  </{name}>\n"));
        self
    }

    /// Closes the root and returns the text.
    pub fn finish(mut self) -> String {
        self.out.push_str(&format!("</{}>\n", self.root));
        self.out
    }
}

fn escape(text: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        root: "doc",
        version: "1",
        fields: &[("a", Occurs::Once), ("b", Occurs::Optional), ("c", Occurs::Many(3))],
    };

    fn parse_str(s: &str) -> Result<Document, XmlError> {
        parse("t.xml", s.as_bytes(), &SCHEMA)
    }

    #[test]
    fn writer_output_reads_back() {
        let mut w = Writer::new("doc", "1");
        w.field("a", "x < y & \"z\"").field("c", "1").field("c", "2");
        let doc = parse_str(&w.finish()).unwrap();
        assert_eq!(doc.get("a"), Some("x < y & \"z\""));
        assert_eq!(doc.get("b"), None);
        assert_eq!(doc.all("c"), vec!["1", "2"]);
    }

    #[test]
    fn empty_element_is_empty_text() {
        let doc = parse_str("<doc version=\"1\"><a/></doc>").unwrap();
        assert_eq!(doc.get("a"), Some(""));
    }

    #[test]
    fn shape_violations_are_refused_with_a_line() {
        let cases = [
            ("", "empty"),
            ("<other version=\"1\"><a>x</a></other>", "root element is <other>"),
            ("<doc version=\"2\"><a>x</a></doc>", "unsupported doc version"),
            ("<doc><a>x</a></doc>", "no version attribute"),
            ("<doc version=\"1\"><a>x</a><a>y</a></doc>", "duplicate <a>"),
            ("<doc version=\"1\"><a>x</a><z>y</z></doc>", "unknown element <z>"),
            ("<doc version=\"1\"><b>x</b></doc>", "missing <a>"),
            ("<doc version=\"1\"><a><b>x</b></a></doc>", "inside <a>"),
            ("<doc version=\"1\"><a>x</a></doc><doc/>", "trailing content"),
            ("<doc version=\"1\"><a>x</a></doc>junk", "trailing content"),
            ("<doc version=\"1\"><a>x</a>", "truncated"),
            (
                "<!DOCTYPE doc [<!ENTITY e \"x\">]><doc version=\"1\"><a>&e;</a></doc>",
                "DOCTYPE",
            ),
            ("<doc version=\"1\"><a>&e;</a></doc>", "entity &e;"),
            ("<doc version=\"1\">stray<a>x</a></doc>", "text outside"),
            ("<doc version=\"1\"><c/><c/><c/><c/><a/></doc>", "more than 3"),
            ("not xml at all", "not XML"),
            ("<!-- only a comment -->", "no <doc> element"),
        ];
        for (input, expected) in cases {
            let err = parse_str(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input:?}: {err:?} lacks {expected:?}");
            assert!(err.starts_with("t.xml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn oversized_and_binary_input_is_refused() {
        let big = format!("<doc version=\"1\"><a>{}</a></doc>", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(parse_str(&big), Err(XmlError::TooLarge { .. })));
        assert!(matches!(
            parse("b", &[0xff, 0xfe, 0x00], &SCHEMA),
            Err(XmlError::NotText { .. })
        ));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_str("<doc version=\"1\">\n<a>x</a>\n<z/>\n</doc>").unwrap_err();
        assert!(err.to_string().starts_with("t.xml:3:"), "{err}");
    }
}
