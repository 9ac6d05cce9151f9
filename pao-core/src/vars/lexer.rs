//! Tokens of the expression language. The lexer is a cursor over the template source that
//! the parser pulls from, so that it can stop exactly at the `}}` or `%}` that ends a tag.

use super::error::{Span, VarError, VarErrorKind};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    Ident(&'s str),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Dot,
    OptDot,
    Question,
    Pipe,
    Tilde,
    Plus,
    Minus,
    Star,
    Slash,
    SlashSlash,
    Percent,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    /// `%}` closing a block tag.
    BlockEnd,
    /// `-%}` closing a block tag and trimming whitespace after it.
    BlockEndTrim,
    Eof,
}

impl Tok<'_> {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(i) => format!("number `{i}`"),
            Tok::Float(f) => format!("number `{f}`"),
            Tok::Str(_) => "a string".to_string(),
            Tok::Eof => "the end of the expression".to_string(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Dot => ".",
            Tok::OptDot => "?.",
            Tok::Question => "?",
            Tok::Pipe => "|",
            Tok::Tilde => "~",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::SlashSlash => "//",
            Tok::Percent => "%",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::BlockEnd => "%}",
            Tok::BlockEndTrim => "-%}",
            _ => "?",
        }
    }
}

/// Bytes that continue an identifier: `_`, ASCII letters and digits.
const IDENT_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c == b'_' || c.is_ascii_alphanumeric();
        b += 1;
    }
    table
};

pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    pub(crate) fn new(src: &'s str, pos: usize) -> Lexer<'s> {
        Lexer { src, pos }
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Skips white space and returns the position of the next token.
    pub(crate) fn skip_ws(&mut self) -> usize {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        self.pos
    }

    pub(crate) fn next_token(&mut self) -> Result<(Tok<'s>, Span), VarError> {
        let start = self.skip_ws();
        let bytes = self.src.as_bytes();
        if start >= bytes.len() {
            return Ok((Tok::Eof, Span::new(start, start)));
        }
        let c = bytes[start];
        let peek = |n: usize| bytes.get(start + n).copied().unwrap_or(0);
        let (tok, len) = match c {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b':' => (Tok::Colon, 1),
            b'.' if !peek(1).is_ascii_digit() => (Tok::Dot, 1),
            b'?' if peek(1) == b'.' && !peek(2).is_ascii_digit() => (Tok::OptDot, 2),
            b'?' => (Tok::Question, 1),
            b'|' if peek(1) == b'|' => (Tok::OrOr, 2),
            b'|' => (Tok::Pipe, 1),
            b'~' => (Tok::Tilde, 1),
            b'+' => (Tok::Plus, 1),
            b'-' if peek(1) == b'%' && peek(2) == b'}' => (Tok::BlockEndTrim, 3),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' if peek(1) == b'/' => (Tok::SlashSlash, 2),
            b'/' => (Tok::Slash, 1),
            b'%' if peek(1) == b'}' => (Tok::BlockEnd, 2),
            b'%' => (Tok::Percent, 1),
            b'=' if peek(1) == b'=' => (Tok::EqEq, 2),
            b'!' if peek(1) == b'=' => (Tok::NotEq, 2),
            b'!' => (Tok::Bang, 1),
            b'<' if peek(1) == b'=' => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if peek(1) == b'=' => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'&' if peek(1) == b'&' => (Tok::AndAnd, 2),
            b'\'' | b'"' => return self.string(start, c),
            b'0'..=b'9' | b'.' => return self.number(start),
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let end = start
                    + 1
                    + bytes[start + 1..]
                        .iter()
                        .take_while(|&&b| IDENT_BYTE[usize::from(b)])
                        .count();
                self.pos = end;
                let src: &'s str = self.src;
                return Ok((Tok::Ident(&src[start..end]), Span::new(start, end)));
            }
            b'=' => {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    Span::new(start, start + 1),
                    "unexpected `=`",
                )
                .with_hint("compare with `==`; expressions cannot assign"));
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or('?');
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    Span::new(start, start + ch.len_utf8()),
                    format!("unexpected character `{ch}`"),
                ));
            }
        };
        self.pos = start + len;
        Ok((tok, Span::new(start, start + len)))
    }

    fn number(&mut self, start: usize) -> Result<(Tok<'s>, Span), VarError> {
        let bytes = self.src.as_bytes();
        let mut end = start;
        let mut is_float = false;
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_digit() || b == b'_' {
                end += 1;
            } else if b == b'.'
                && !is_float
                && bytes.get(end + 1).is_some_and(|n| n.is_ascii_digit())
            {
                is_float = true;
                end += 1;
            } else if (b == b'e' || b == b'E')
                && (bytes.get(end + 1).is_some_and(|n| n.is_ascii_digit())
                    || (matches!(bytes.get(end + 1), Some(b'+' | b'-'))
                        && bytes.get(end + 2).is_some_and(|n| n.is_ascii_digit())))
            {
                is_float = true;
                end += 2;
            } else {
                break;
            }
        }
        self.pos = end;
        let span = Span::new(start, end);
        let written = &self.src[start..end];
        let text: std::borrow::Cow<'_, str> = if written.contains('_') {
            written
                .chars()
                .filter(|c| *c != '_')
                .collect::<String>()
                .into()
        } else {
            written.into()
        };
        if is_float {
            text.parse::<f64>()
                .map(|f| (Tok::Float(f), span))
                .map_err(|_| {
                    VarError::at(
                        VarErrorKind::Syntax,
                        span,
                        format!("invalid number `{text}`"),
                    )
                })
        } else {
            text.parse::<i64>()
                .map(|i| (Tok::Int(i), span))
                .map_err(|_| {
                    VarError::at(
                        VarErrorKind::Syntax,
                        span,
                        format!("integer `{text}` does not fit in 64 bits"),
                    )
                })
        }
    }

    fn string(&mut self, start: usize, quote: u8) -> Result<(Tok<'s>, Span), VarError> {
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            let at = start + 1 + i;
            match c {
                c if c as u32 == quote as u32 => {
                    self.pos = at + 1;
                    return Ok((Tok::Str(out.into()), Span::new(start, at + 1)));
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        '\\' => out.push('\\'),
                        '\'' => out.push('\''),
                        '"' => out.push('"'),
                        'u' => {
                            let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                            let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                            match ch {
                                Some(ch) if hex.len() == 4 => out.push(ch),
                                _ => {
                                    return Err(VarError::at(
                                        VarErrorKind::Syntax,
                                        Span::new(at, at + 2 + hex.len()),
                                        "invalid `\\u` escape: expected 4 hex digits",
                                    ));
                                }
                            }
                        }
                        other => {
                            return Err(VarError::at(
                                VarErrorKind::Syntax,
                                Span::new(at, at + 1 + other.len_utf8()),
                                format!("unknown escape `\\{other}`"),
                            )
                            .with_hint("escapes are \\n \\t \\r \\0 \\\\ \\' \\\" and \\uXXXX"));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        Err(VarError::at(
            VarErrorKind::Syntax,
            Span::new(start, self.src.len()),
            "unterminated string",
        )
        .with_hint(format!("close it with {}", quote as char)))
    }
}
