//! Parser: template text → nodes, and expression tokens → expression trees. Precedence, from
//! loosest to tightest: `?:`, `||`/`or`, `&&`/`and`, `not`, comparisons and `in`, `~`, `+ -`,
//! `* / // %`, unary `- !`, filters `|`, postfix `. ?. []` and calls.

use std::borrow::Cow;

use compact_str::CompactString;
use regex::Regex;

use super::Limits;
use super::ast::*;
use super::error::{Span, VarError, VarErrorKind, did_you_mean};
use super::fold;
use super::functions::{Builtin, Functions};
use super::lexer::{Lexer, Tok};

const SCOPE_NAMES: [&str; 11] = [
    "user", "metadata", "request", "system", "env", "fields", "outputs", "computed", "secrets",
    "result", "cost",
];

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_CMP: u8 = 4;
const PREC_CONCAT: u8 = 5;
const PREC_ADD: u8 = 6;
const PREC_MUL: u8 = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Or,
    And,
    Op(BinOp),
}

pub(crate) struct Parser<'s, 'f> {
    src: &'s str,
    lex: Lexer<'s>,
    peeked: Option<(Tok<'s>, Span)>,
    funcs: &'f Functions,
    limits: &'f Limits,
    /// Loop variable names, innermost last.
    locals: Vec<Box<str>>,
    depth: usize,
    blocks: usize,
    pub(crate) uses_secrets: bool,
    /// How deep loops nest in what was parsed.
    pub(crate) loop_depth: usize,
}

/// How the text after a block tag is trimmed.
#[derive(Clone, Copy, PartialEq)]
enum Trim {
    None,
    /// trim_blocks: drop one newline right after the tag.
    Newline,
    /// `-%}`: drop all white space after the tag.
    All,
}

struct Tag<'s> {
    keyword: &'s str,
    span: Span,
}

impl<'s, 'f> Parser<'s, 'f> {
    pub(crate) fn new(src: &'s str, funcs: &'f Functions, limits: &'f Limits) -> Self {
        Parser {
            src,
            lex: Lexer::new(src, 0),
            peeked: None,
            funcs,
            limits,
            locals: Vec::new(),
            depth: 0,
            blocks: 0,
            uses_secrets: false,
            loop_depth: 0,
        }
    }

    // ---------------------------------------------------------------- templates

    pub(crate) fn parse_template(&mut self) -> Result<Vec<Node>, VarError> {
        let mut pos = 0;
        let mut trim = Trim::None;
        let (nodes, end) = self.parse_nodes(&mut pos, &mut trim, &[])?;
        debug_assert!(end.is_none());
        Ok(nodes)
    }

    /// Parses nodes until one of `until` block keywords (returned) or the end of the source.
    fn parse_nodes(
        &mut self,
        pos: &mut usize,
        trim: &mut Trim,
        until: &[&str],
    ) -> Result<(Vec<Node>, Option<Tag<'s>>), VarError> {
        let src = self.src;
        let bytes = src.as_bytes();
        let mut nodes = Vec::new();
        // Text since the last node: usually one slice of the source, owned only when pieces
        // are joined (around `$${{`), so that a text node costs exactly one allocation.
        let mut text: Cow<'s, str> = Cow::Borrowed("");
        loop {
            // Find the next tag start.
            let rest = &src[*pos..];
            let next = find_tag(rest).map(|i| *pos + i);
            let chunk_end = next.unwrap_or(src.len());
            let mut chunk = &src[*pos..chunk_end];
            match *trim {
                Trim::All => chunk = chunk.trim_start(),
                Trim::Newline => {
                    chunk = chunk
                        .strip_prefix("\r\n")
                        .or_else(|| chunk.strip_prefix('\n'))
                        .unwrap_or(chunk)
                }
                Trim::None => {}
            }
            *trim = Trim::None;
            if text.is_empty() {
                text = Cow::Borrowed(chunk);
            } else {
                text.to_mut().push_str(chunk);
            }
            let Some(at) = next else {
                *pos = src.len();
                break;
            };
            if src[at..].starts_with("$${{") {
                text.to_mut().push_str("${{");
                *pos = at + 4;
                continue;
            }
            if src[at..].starts_with("${{") {
                flush_text(&mut nodes, &mut text);
                *pos = at + 3;
                let expr = self.parse_interp(at, pos)?;
                nodes.push(Node::Interp(expr));
                continue;
            }
            // A block tag `{%`.
            let trim_before = bytes.get(at + 2) == Some(&b'-');
            if trim_before {
                let kept = text.trim_end().len();
                match &mut text {
                    Cow::Borrowed(t) => *t = &t[..kept],
                    Cow::Owned(t) => t.truncate(kept),
                }
            }
            flush_text(&mut nodes, &mut text);
            let tag_start = at;
            *pos = at + if trim_before { 3 } else { 2 };
            self.reset(*pos);
            let (tok, kw_span) = self.next()?;
            let Tok::Ident(keyword) = tok else {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    kw_span,
                    format!(
                        "expected a block keyword after `{{%`, found {}",
                        tok.describe()
                    ),
                )
                .with_hint("blocks are if, elif, else, endif, for, endfor"));
            };
            let tag = Tag {
                keyword,
                span: Span::new(tag_start, kw_span.end as usize),
            };
            match keyword {
                k if until.contains(&k) => {
                    if matches!(k, "elif") {
                        // The caller parses the condition.
                        return Ok((nodes, Some(tag)));
                    }
                    *trim = self.block_end(pos)?;
                    return Ok((nodes, Some(tag)));
                }
                "if" => {
                    let node = self.parse_if(pos, trim, tag)?;
                    nodes.push(node);
                }
                "for" => {
                    let node = self.parse_for(pos, trim, tag)?;
                    nodes.push(node);
                }
                "elif" | "else" | "endif" | "endfor" => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        tag.span,
                        format!("`{{% {keyword} %}}` without a matching opening block"),
                    ));
                }
                other => {
                    let mut err = VarError::at(
                        VarErrorKind::Syntax,
                        kw_span,
                        format!("unknown block `{other}`"),
                    );
                    if let Some(s) =
                        did_you_mean(other, ["if", "elif", "else", "endif", "for", "endfor"])
                    {
                        err = err.with_hint(format!("did you mean `{s}`?"));
                    }
                    return Err(err);
                }
            }
        }
        flush_text(&mut nodes, &mut text);
        if let Some(first) = until.first() {
            let _ = first;
            return Err(VarError::new(
                VarErrorKind::Syntax,
                format!(
                    "unexpected end of template: expected `{{% {} %}}`",
                    until.join(" %}` or `{% ")
                ),
            )
            .with_span(Span::new(src.len(), src.len())));
        }
        Ok((nodes, None))
    }

    fn enter_block(&mut self, span: Span) -> Result<(), VarError> {
        self.blocks += 1;
        if self.blocks > self.limits.max_nesting {
            return Err(VarError::at(
                VarErrorKind::Limit,
                span,
                format!("blocks nested deeper than {}", self.limits.max_nesting),
            ));
        }
        Ok(())
    }

    fn parse_if(
        &mut self,
        pos: &mut usize,
        trim: &mut Trim,
        tag: Tag<'s>,
    ) -> Result<Node, VarError> {
        self.enter_block(tag.span)?;
        let mut branches = Vec::new();
        let mut cond = self.parse_expr()?;
        *trim = self.block_end(pos)?;
        let else_body;
        loop {
            let (body, end) = self.parse_nodes(pos, trim, &["elif", "else", "endif"])?;
            let end = end.expect("parse_nodes returns the end tag when `until` is set");
            branches.push((cond, body));
            match end.keyword {
                "elif" => {
                    cond = self.parse_expr()?;
                    *trim = self.block_end(pos)?;
                }
                "else" => {
                    let (body, _) = self.parse_nodes(pos, trim, &["endif"])?;
                    else_body = body;
                    break;
                }
                _ => {
                    else_body = Vec::new();
                    break;
                }
            }
        }
        self.blocks -= 1;
        Ok(Node::If(branches.into_boxed_slice(), else_body))
    }

    fn parse_for(
        &mut self,
        pos: &mut usize,
        trim: &mut Trim,
        tag: Tag<'s>,
    ) -> Result<Node, VarError> {
        self.enter_block(tag.span)?;
        let (tok, var_span) = self.next()?;
        let Tok::Ident(var) = tok else {
            return Err(VarError::at(
                VarErrorKind::Syntax,
                var_span,
                format!("expected a loop variable name, found {}", tok.describe()),
            ));
        };
        if SCOPE_NAMES.contains(&var) || var == "loop" || is_keyword(var) {
            return Err(VarError::at(
                VarErrorKind::Syntax,
                var_span,
                format!("`{var}` cannot be a loop variable: it is a scope or keyword"),
            ));
        }
        match self.next()? {
            (Tok::Ident("in"), _) => {}
            (tok, span) => {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    span,
                    format!("expected `in`, found {}", tok.describe()),
                ));
            }
        }
        let iter = self.parse_expr()?;
        *trim = self.block_end(pos)?;
        let depth = self.locals.len();
        if depth >= self.limits.max_nesting {
            return Err(VarError::at(
                VarErrorKind::Limit,
                tag.span,
                "loops nested too deeply",
            ));
        }
        self.locals.push(var.into());
        self.loop_depth = self.loop_depth.max(self.locals.len());
        let (body, _) = self.parse_nodes(pos, trim, &["endfor"])?;
        self.locals.pop();
        self.blocks -= 1;
        Ok(Node::For(Box::new(ForNode {
            depth: depth as u8,
            iter,
            body,
            span: tag.span,
        })))
    }

    /// Expects `%}` or `-%}` and moves `pos` after it.
    fn block_end(&mut self, pos: &mut usize) -> Result<Trim, VarError> {
        let (tok, span) = self.next()?;
        let trim = match tok {
            Tok::BlockEnd => Trim::Newline,
            Tok::BlockEndTrim => Trim::All,
            other => {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    span,
                    format!(
                        "expected `%}}` to close the block, found {}",
                        other.describe()
                    ),
                ));
            }
        };
        *pos = span.end as usize;
        Ok(trim)
    }

    fn parse_interp(&mut self, open: usize, pos: &mut usize) -> Result<Expr, VarError> {
        self.reset(*pos);
        if let &(Tok::RBrace, s) = self.peek()?
            && self.src.as_bytes().get(s.end as usize) == Some(&b'}')
        {
            return Err(VarError::at(
                VarErrorKind::Syntax,
                Span::new(open, s.end as usize + 1),
                "empty `${{ }}`",
            ));
        }
        let expr = self.parse_expr()?;
        let (tok, span) = self.next()?;
        if tok == Tok::RBrace && self.src.as_bytes().get(span.end as usize) == Some(&b'}') {
            *pos = span.end as usize + 1;
            return Ok(expr);
        }
        if tok == Tok::Eof {
            return Err(VarError::at(
                VarErrorKind::Syntax,
                Span::new(open, open + 3),
                "unclosed `${{`: expected `}}`",
            ));
        }
        Err(VarError::at(
            VarErrorKind::Syntax,
            span,
            format!("expected `}}}}` to close `${{{{`, found {}", tok.describe()),
        ))
    }

    /// Parses a whole bare expression (a `when:` condition).
    pub(crate) fn parse_bare(&mut self) -> Result<Expr, VarError> {
        self.reset(0);
        let expr = self.parse_expr()?;
        match self.next()? {
            (Tok::Eof, _) => Ok(expr),
            (tok, span) => Err(VarError::at(
                VarErrorKind::Syntax,
                span,
                format!("unexpected {} after the expression", tok.describe()),
            )),
        }
    }

    // ---------------------------------------------------------------- tokens

    fn reset(&mut self, pos: usize) {
        self.lex.set_pos(pos);
        self.peeked = None;
    }

    fn peek(&mut self) -> Result<&(Tok<'s>, Span), VarError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next_token()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<(Tok<'s>, Span), VarError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next_token(),
        }
    }

    fn peek_is(&mut self, tok: &Tok<'_>) -> Result<bool, VarError> {
        Ok(&self.peek()?.0 == tok)
    }

    fn peek_ident(&mut self, word: &str) -> Result<bool, VarError> {
        Ok(matches!(&self.peek()?.0, Tok::Ident(w) if *w == word))
    }

    fn expect(&mut self, tok: Tok<'_>, what: &str) -> Result<Span, VarError> {
        let (t, span) = self.next()?;
        if t == tok {
            Ok(span)
        } else {
            Err(VarError::at(
                VarErrorKind::Syntax,
                span,
                format!("expected {what}, found {}", t.describe()),
            ))
        }
    }

    // ---------------------------------------------------------------- expressions

    fn parse_expr(&mut self) -> Result<Expr, VarError> {
        self.depth += 1;
        if self.depth > self.limits.max_expression_depth {
            let span = self.peek()?.1;
            return Err(VarError::at(
                VarErrorKind::Limit,
                span,
                format!(
                    "expression nested deeper than {}",
                    self.limits.max_expression_depth
                ),
            ));
        }
        let r = self.parse_ternary();
        self.depth -= 1;
        r
    }

    fn parse_ternary(&mut self) -> Result<Expr, VarError> {
        let cond = self.parse_binary(PREC_OR)?;
        if self.peek_is(&Tok::Question)? {
            self.next()?;
            let then = self.parse_expr()?;
            self.expect(Tok::Colon, "`:` of the `? :` expression")?;
            let otherwise = self.parse_expr()?;
            return Ok(self.fold(Expr::Cond(Box::new((cond, then, otherwise)))));
        }
        Ok(cond)
    }

    /// The binary operator at the cursor and its precedence.
    fn peek_binary(&mut self) -> Result<Option<(BinaryOp, u8)>, VarError> {
        Ok(Some(match &self.peek()?.0 {
            Tok::OrOr => (BinaryOp::Or, PREC_OR),
            Tok::Ident(w) if &**w == "or" => (BinaryOp::Or, PREC_OR),
            Tok::AndAnd => (BinaryOp::And, PREC_AND),
            Tok::Ident(w) if &**w == "and" => (BinaryOp::And, PREC_AND),
            Tok::EqEq => (BinaryOp::Op(BinOp::Eq), PREC_CMP),
            Tok::NotEq => (BinaryOp::Op(BinOp::Ne), PREC_CMP),
            Tok::Lt => (BinaryOp::Op(BinOp::Lt), PREC_CMP),
            Tok::Le => (BinaryOp::Op(BinOp::Le), PREC_CMP),
            Tok::Gt => (BinaryOp::Op(BinOp::Gt), PREC_CMP),
            Tok::Ge => (BinaryOp::Op(BinOp::Ge), PREC_CMP),
            Tok::Ident(w) if &**w == "in" => (BinaryOp::Op(BinOp::In), PREC_CMP),
            Tok::Ident(w) if &**w == "not" => (BinaryOp::Op(BinOp::NotIn), PREC_CMP),
            Tok::Tilde => (BinaryOp::Op(BinOp::Concat), PREC_CONCAT),
            Tok::Plus => (BinaryOp::Op(BinOp::Add), PREC_ADD),
            Tok::Minus => (BinaryOp::Op(BinOp::Sub), PREC_ADD),
            Tok::Star => (BinaryOp::Op(BinOp::Mul), PREC_MUL),
            Tok::Slash => (BinaryOp::Op(BinOp::Div), PREC_MUL),
            Tok::SlashSlash => (BinaryOp::Op(BinOp::FloorDiv), PREC_MUL),
            Tok::Percent => (BinaryOp::Op(BinOp::Rem), PREC_MUL),
            _ => return Ok(None),
        }))
    }

    /// Precedence climbing over the binary operators, with `not` as a prefix between `and`
    /// and the comparisons.
    fn parse_binary(&mut self, min: u8) -> Result<Expr, VarError> {
        let mut lhs = if min <= PREC_NOT && self.peek_ident("not")? {
            let (_, span) = self.next()?;
            self.nest(span)?;
            let inner = self.parse_binary(PREC_NOT);
            self.depth -= 1;
            let inner = inner?;
            let span = span.to(inner.span());
            self.fold(Expr::Unary(UnOp::Not, Box::new(inner), span))
        } else {
            self.parse_unary()?
        };
        // Each operator of a chain deepens the tree by one; bound it like nesting.
        let outer_depth = self.depth;
        let result = (|| {
            while let Some((op, prec)) = self.peek_binary()? {
                if prec < min {
                    break;
                }
                let (_, op_span) = self.next()?;
                self.nest(op_span)?;
                if op == BinaryOp::Op(BinOp::NotIn) {
                    match self.next()? {
                        (Tok::Ident("in"), _) => {}
                        (tok, span) => {
                            return Err(VarError::at(
                                VarErrorKind::Syntax,
                                span,
                                format!("expected `in` after `not`, found {}", tok.describe()),
                            ));
                        }
                    }
                }
                let rhs_span = self.peek()?.1;
                self.nest(rhs_span)?;
                let rhs = self.parse_binary(prec + 1);
                self.depth -= 1;
                let rhs = rhs?;
                lhs = match op {
                    BinaryOp::Or => self.fold(Expr::Or(Box::new((lhs, rhs)))),
                    BinaryOp::And => self.fold(Expr::And(Box::new((lhs, rhs)))),
                    BinaryOp::Op(op) => {
                        let span = lhs.span().to(rhs.span());
                        self.fold(Expr::Binary(op, Box::new((lhs, rhs)), span))
                    }
                };
            }
            Ok(lhs)
        })();
        self.depth = outer_depth;
        result
    }

    /// `e`, evaluated now when it is an operator over constants (see [`fold`]).
    fn fold(&self, e: Expr) -> Expr {
        fold::fold(e, self.limits)
    }

    fn nest(&mut self, span: Span) -> Result<(), VarError> {
        self.depth += 1;
        if self.depth > self.limits.max_expression_depth {
            return Err(VarError::at(
                VarErrorKind::Limit,
                span,
                format!(
                    "expression nested deeper than {}",
                    self.limits.max_expression_depth
                ),
            ));
        }
        Ok(())
    }

    fn parse_unary(&mut self) -> Result<Expr, VarError> {
        let op = match self.peek()?.0 {
            Tok::Bang => Some(UnOp::Not),
            Tok::Minus => Some(UnOp::Neg),
            _ => None,
        };
        if let Some(op) = op {
            let (_, span) = self.next()?;
            self.nest(span)?;
            let inner = self.parse_unary();
            self.depth -= 1;
            let inner = inner?;
            // Fold negative literals so `-1` is a constant.
            if op == UnOp::Neg {
                match inner {
                    Expr::Const(Const::Int(i), s) => {
                        return Ok(Expr::Const(Const::Int(-i), span.to(s)));
                    }
                    Expr::Const(Const::Float(f), s) => {
                        return Ok(Expr::Const(Const::Float(-f), span.to(s)));
                    }
                    _ => {}
                }
            }
            let span = span.to(inner.span());
            return Ok(self.fold(Expr::Unary(op, Box::new(inner), span)));
        }
        self.parse_filtered()
    }

    fn parse_filtered(&mut self) -> Result<Expr, VarError> {
        let mut expr = self.parse_postfix()?;
        while self.peek_is(&Tok::Pipe)? {
            self.next()?;
            let (tok, name_span) = self.next()?;
            let Tok::Ident(name) = tok else {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    name_span,
                    format!(
                        "expected a function name after `|`, found {}",
                        tok.describe()
                    ),
                ));
            };
            let mut args = vec![expr];
            let mut end = name_span;
            if self.peek_is(&Tok::LParen)? {
                self.next()?;
                end = self.parse_args(&mut args)?;
            }
            let span = args[0].span().to(end);
            expr = self.make_call(name, name_span, args, span)?;
        }
        Ok(expr)
    }

    /// Parses `a, b)` after `(`; returns the span of `)`.
    fn parse_args(&mut self, args: &mut Vec<Expr>) -> Result<Span, VarError> {
        loop {
            if self.peek_is(&Tok::RParen)? {
                return Ok(self.next()?.1);
            }
            args.push(self.parse_expr()?);
            match self.next()? {
                (Tok::Comma, _) => continue,
                (Tok::RParen, span) => return Ok(span),
                (tok, span) => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        span,
                        format!(
                            "expected `,` or `)` in the argument list, found {}",
                            tok.describe()
                        ),
                    ));
                }
            }
        }
    }

    fn make_call(
        &mut self,
        name: &str,
        name_span: Span,
        args: Vec<Expr>,
        span: Span,
    ) -> Result<Expr, VarError> {
        let Some((func, min, max)) = self.funcs.resolve(name) else {
            let mut err = VarError::at(
                VarErrorKind::UnknownFunction,
                name_span,
                format!("unknown function `{name}`"),
            );
            if let Some(s) = did_you_mean(name, self.funcs.names()) {
                err = err.with_hint(format!("did you mean `{s}`?"));
            }
            return Err(err);
        };
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(VarError::at(
                VarErrorKind::BadArguments,
                span,
                format!(
                    "`{name}` takes {expected} argument{}, got {} (a filter `x | f(a)` passes x as the first)",
                    if expected == "1" { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        let mut regex = None;
        if let Func::Builtin(b) = &func {
            if let Some(i) = b.regex_arg()
                && let Some(arg) = args.get(i)
                && let Some(pat) = arg.const_str()
            {
                regex = Some(compile_regex(pat).map_err(|e| e.with_span(arg.span()))?);
            }
            b.check_literal_args(&args)?;
        }
        Ok(Expr::Call(Box::new(Call {
            func,
            name: name.into(),
            args: args.into_boxed_slice(),
            span,
            regex,
        })))
    }

    fn parse_postfix(&mut self) -> Result<Expr, VarError> {
        let (tok, span) = self.next()?;
        // Built in place on the heap: a path is moved nowhere once started.
        let mut path: Option<Box<Path>> = None;
        let mut expr = match tok {
            Tok::Int(i) => Expr::Const(Const::Int(i), span),
            Tok::Float(f) => Expr::Const(Const::Float(f), span),
            Tok::Str(s) => Expr::Const(Const::Str(s), span),
            Tok::LParen => {
                let inner = self.parse_expr()?;
                self.expect(Tok::RParen, "`)`")?;
                inner
            }
            Tok::LBracket => self.parse_list(span)?,
            Tok::LBrace => self.parse_object(span)?,
            Tok::Ident(name) => match name {
                "true" => Expr::Const(Const::Bool(true), span),
                "false" => Expr::Const(Const::Bool(false), span),
                "null" => Expr::Const(Const::Null, span),
                _ if self.peek_is(&Tok::LParen)? => {
                    self.next()?;
                    let mut args = Vec::new();
                    let end = self.parse_args(&mut args)?;
                    self.make_call(name, span, args, span.to(end))?
                }
                _ => {
                    let base = self.resolve_root(name, span)?;
                    path = Some(Box::new(Path {
                        base,
                        base_span: span,
                        segs: Segs::default(),
                        span,
                        optional_chain: false,
                        plain: false,
                        loop_field: None,
                    }));
                    Expr::Const(Const::Null, span)
                }
            },
            other => {
                return Err(VarError::at(
                    VarErrorKind::Syntax,
                    span,
                    format!("expected a value, found {}", other.describe()),
                ));
            }
        };
        // Postfix accessors.
        while let Some((seg, end)) = self.parse_seg()? {
            let p = path.get_or_insert_with(|| {
                let base_span = expr.span();
                Box::new(Path {
                    base: Base::Expr(std::mem::replace(
                        &mut expr,
                        Expr::Const(Const::Null, base_span),
                    )),
                    base_span,
                    segs: Segs::default(),
                    span: base_span,
                    optional_chain: false,
                    plain: false,
                    loop_field: None,
                })
            });
            p.span = p.span.to(end);
            p.segs.push(seg);
        }
        if let Some(mut p) = path {
            p.finish();
            if matches!(p.base, Base::Scope(Scope::Secrets)) {
                self.uses_secrets = true;
            }
            return Ok(Expr::Path(p));
        }
        Ok(expr)
    }

    /// The rest of a list literal after its `[` at `span`.
    fn parse_list(&mut self, span: Span) -> Result<Expr, VarError> {
        let mut items = Vec::new();
        let end = loop {
            if self.peek_is(&Tok::RBracket)? {
                break self.next()?.1;
            }
            items.push(self.parse_expr()?);
            match self.next()? {
                (Tok::Comma, _) => continue,
                (Tok::RBracket, s) => break s,
                (tok, s) => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        s,
                        format!("expected `,` or `]` in the list, found {}", tok.describe()),
                    ));
                }
            }
        };
        Ok(self.fold(Expr::List(items.into_boxed_slice(), span.to(end))))
    }

    /// The rest of an object literal after its `{` at `span`.
    fn parse_object(&mut self, span: Span) -> Result<Expr, VarError> {
        let mut entries = Vec::new();
        let end = loop {
            if self.peek_is(&Tok::RBrace)? {
                break self.next()?.1;
            }
            let key = match self.next()? {
                (Tok::Str(s), _) => s,
                (Tok::Ident(s), _) => s.into(),
                (tok, s) => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        s,
                        format!("expected an object key, found {}", tok.describe()),
                    ));
                }
            };
            self.expect(Tok::Colon, "`:` after the object key")?;
            let value = self.parse_expr()?;
            entries.push((key, value));
            match self.next()? {
                (Tok::Comma, _) => continue,
                (Tok::RBrace, s) => break s,
                (tok, s) => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        s,
                        format!(
                            "expected `,` or `}}` in the object, found {}",
                            tok.describe()
                        ),
                    ));
                }
            }
        };
        Ok(self.fold(Expr::Object(entries.into_boxed_slice(), span.to(end))))
    }

    /// One postfix accessor (`.name`, `?.name`, `[index]`, `?.[index]`) and where it ends;
    /// `None` when none follows.
    fn parse_seg(&mut self) -> Result<Option<(Seg, Span)>, VarError> {
        let optional = match self.peek()?.0 {
            Tok::Dot | Tok::LBracket => false,
            Tok::OptDot => true,
            _ => return Ok(None),
        };
        let (tok, start) = self.next()?;
        let (kind, end) = if tok == Tok::LBracket || (optional && self.peek_is(&Tok::LBracket)?) {
            if tok != Tok::LBracket {
                self.next()?;
            }
            let index = self.parse_expr()?;
            let end = self.expect(Tok::RBracket, "`]`")?;
            let kind = match index {
                Expr::Const(Const::Str(s), _) => SegKind::Key(CompactString::from(s)),
                Expr::Const(Const::Int(i), _) => SegKind::Index(i),
                other => SegKind::Dyn(Box::new(other)),
            };
            (kind, end)
        } else {
            match self.next()? {
                (Tok::Ident(name), s) => (SegKind::Key(CompactString::from(name)), s),
                (Tok::Int(i), s) if i >= 0 => (SegKind::Index(i), s),
                (tok, s) => {
                    return Err(VarError::at(
                        VarErrorKind::Syntax,
                        s,
                        format!("expected a name after `.`, found {}", tok.describe()),
                    ));
                }
            }
        };
        let seg = Seg {
            kind,
            optional,
            span: start.to(end),
        };
        Ok(Some((seg, end)))
    }

    fn resolve_root(&mut self, name: &str, span: Span) -> Result<Base, VarError> {
        if let Some(depth) = self.locals.iter().rposition(|l| &**l == name) {
            return Ok(Base::Local(depth as u8, name.into()));
        }
        if name == "loop" {
            if self.locals.is_empty() {
                return Err(VarError::at(
                    VarErrorKind::UnknownScope,
                    span,
                    "`loop` is only available inside `{% for %}`",
                ));
            }
            return Ok(Base::LoopMeta((self.locals.len() - 1) as u8));
        }
        if let Some(scope) = Scope::from_name(name) {
            return Ok(Base::Scope(scope));
        }
        let mut err = VarError::at(
            VarErrorKind::UnknownScope,
            span,
            format!(
                "unknown scope `{name}`; paths start with one of: {}",
                SCOPE_NAMES[..9].join(", ")
            ),
        );
        let candidates = SCOPE_NAMES
            .iter()
            .copied()
            .chain(self.locals.iter().map(|l| &**l));
        if let Some(s) = did_you_mean(name, candidates) {
            err = err.with_hint(format!("did you mean `{s}`?"));
        } else if self.funcs.resolve(name).is_some() {
            err = err.with_hint(format!("`{name}` is a function: call it as `{name}(...)`"));
        }
        Err(err)
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "true" | "false" | "null" | "and" | "or" | "not" | "in")
}

fn flush_text(nodes: &mut Vec<Node>, text: &mut Cow<'_, str>) {
    if !text.is_empty() {
        let t = match std::mem::take(text) {
            Cow::Borrowed(t) => CompactString::from(t),
            Cow::Owned(t) => CompactString::from(t),
        };
        nodes.push(Node::Text(t));
    }
}

/// Offset of the next `${{`, `$${{` or `{%` in `s`.
fn find_tag(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    for i in memchr::memchr2_iter(b'$', b'{', bytes) {
        let rest = &bytes[i + 1..];
        let found = if bytes[i] == b'$' {
            rest.starts_with(b"{{") || rest.starts_with(b"${{")
        } else {
            rest.first() == Some(&b'%')
        };
        if found {
            return Some(i);
        }
    }
    None
}

pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, VarError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            VarError::new(
                VarErrorKind::Function,
                format!("invalid regular expression: {e}"),
            )
        })
}

impl Builtin {
    /// Rejects literal arguments whose type can never work.
    fn check_literal_args(&self, args: &[Expr]) -> Result<(), VarError> {
        let wants_string = self.string_args();
        for &i in wants_string {
            let not_text = match args.get(i) {
                Some(Expr::Const(c, span)) => (!matches!(c, Const::Str(_))).then_some(span),
                Some(Expr::Folded(f, span)) => (!f.value.is_string()).then_some(span),
                _ => None,
            };
            if let Some(span) = not_text {
                return Err(VarError::at(
                    VarErrorKind::BadArguments,
                    *span,
                    format!("`{}` expects a string here", self.name()),
                ));
            }
        }
        Ok(())
    }
}
