//! Wire: the span rules of [`super`] applied straight to the protobuf bytes of
//! an `ExportTraceServiceRequest`, without building the message.
//!
//! The receivers' fast path. A full decode allocates a `String` for every
//! attribute key and value of every span, and most of them are never read;
//! this reader walks the wire format once, keeps only borrowed slices of the
//! fields the rules need (the resource's attributes, and per span its kind,
//! name, parent, times, status code, trace id and attributes) and skips
//! everything else by wire type. The rules themselves are not here: it fills
//! the same `SpanFields` the decoded path fills and calls the same
//! `sample_of`, so the two cannot drift apart (a property test in this
//! module checks that they agree on random requests).
//!
//! It must never panic on any input and never copy a string: bad bytes are a
//! [`WireError`] (the receivers answer `INVALID_ARGUMENT`). It checks what it
//! reads (wire types of the fields it uses, lengths, UTF-8 of the strings the
//! rules look at); bytes it skips are only checked for framing, so some
//! payloads a full decode would refuse (say, bad UTF-8 in an event name) are
//! accepted and forwarded unchanged.
//!
//! Varints, keys and skipping use `prost::encoding` (the same code the full
//! decode runs), not a hand-written varint reader.

use std::cell::Cell;

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

use super::{
    genai, keys, sample_of, service_of, Attrs, ExtractReport, SampleRef, SpanFields, Tally, Val,
};
use crate::config::ExtractConfig;

/// Why bytes are not an `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Bad framing: a varint, a key or a length that does not fit.
    #[error("invalid protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A field the rules read came with another wire type than its schema's.
    #[error("invalid protobuf: {field} has wire type {actual:?}, expected {expected:?}")]
    WireType {
        /// `Message.field`.
        field: &'static str,
        /// What came.
        actual: WireType,
        /// What the schema says.
        expected: WireType,
    },
    /// A length running past the end of its enclosing message.
    #[error("invalid protobuf: {0} runs past the end of the buffer")]
    Truncated(&'static str),
    /// A field not read (skipped) running past the end of its message.
    #[error("invalid protobuf: field {0} runs past the end of its message")]
    SkippedTruncated(u32),
    /// A string field the rules read is not UTF-8.
    #[error("invalid protobuf: {0} is not valid UTF-8")]
    Utf8(&'static str),
}

/// A borrowed attribute value, read from its `AnyValue` bytes; strings are
/// checked for UTF-8 only when a rule reads them.
#[derive(Debug, Clone, Copy)]
enum RawVal<'a> {
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
    Other,
}

/// The `value` of a `KeyValue`, unparsed.
#[derive(Debug, Clone, Copy)]
enum RawValue<'a> {
    /// No `value` field.
    None,
    /// One `value` field (the usual case).
    One(&'a [u8]),
    /// Several: they merge, so the whole `KeyValue` is parsed again.
    Repeated(&'a [u8]),
}

impl<'a> RawValue<'a> {
    #[inline(always)]
    fn parse(self) -> Result<RawVal<'a>, WireError> {
        match self {
            RawValue::None => Ok(RawVal::Other),
            RawValue::One(bytes) => read_any_value(bytes),
            RawValue::Repeated(key_value) => parse_repeated(key_value),
        }
    }
}

#[cold]
fn parse_repeated(key_value: &[u8]) -> Result<RawVal<'_>, WireError> {
    let mut value = RawVal::Other;
    let mut fields = Reader::new(key_value);
    while let Some((tag, wire)) = fields.field()? {
        match tag {
            2 => value = read_any_value_fields(fields.bytes(wire, "KeyValue.value")?, value)?,
            _ => fields.skip(wire, tag)?,
        }
    }
    Ok(value)
}

/// At most this many distinct attribute keys may be read by the rules
/// ([`keys`] and the configured ones; [`crate::config`] caps the
/// configured ones well below): one bit each in [`Found::present`].
const MAX_WANTED: usize = 64;

/// The attribute keys the rules may read ([`keys`] and the configured
/// ones), each with an index. Reading a span keeps the first value of each
/// in a [`Found`] by that index, so a rule's lookup is an index, never a
/// scan of the span's attributes. A key read from the wire is first
/// filtered by a 6-bit hash of its length and first and last bytes (most
/// attributes stop there, with no byte comparison), then compared.
#[derive(Debug)]
struct Wanted<'c> {
    keys: Vec<&'c str>,
    /// Per hash, the indices of the keys with that hash, as bits.
    by_hash: [u64; 64],
    /// The indices of `extract.genai`'s keys, as bits: a span with none
    /// of them has no phase to read (one test instead of a lookup per
    /// name, on every span).
    genai: u64,
}

impl<'c> Wanted<'c> {
    fn new(config: &'c ExtractConfig) -> Self {
        let mut wanted = Self {
            keys: Vec::new(),
            by_hash: [0; 64],
            genai: 0,
        };
        for key in rule_keys(config) {
            if wanted.keys.len() == MAX_WANTED || wanted.index(key.as_bytes()).is_some() {
                continue;
            }
            wanted.by_hash[Self::hash(key.as_bytes())] |= 1 << wanted.keys.len();
            wanted.keys.push(key);
        }
        for key in config.genai.keys() {
            if let Some(i) = wanted.index(key.as_bytes()) {
                wanted.genai |= 1 << i;
            }
        }
        wanted
    }

    /// Which of 64 lists of keys `key` is in.
    #[inline(always)]
    fn hash(key: &[u8]) -> usize {
        let (first, last) = (key.first().copied(), key.last().copied());
        let spread =
            key.len() * 7 + usize::from(first.unwrap_or(0)) + usize::from(last.unwrap_or(0)) * 3;
        spread % 64
    }

    /// The index of `key` if the rules may read it.
    #[inline(always)]
    fn index(&self, key: &[u8]) -> Option<usize> {
        self.find(Self::hash(key), |wanted| wanted.as_bytes() == key)
    }

    /// The index of a key the rules ask for: they pass the very strings
    /// the index was built from ([`keys`] are statics for this), so an
    /// address comparison settles it.
    #[inline(always)]
    fn index_of_rule(&self, key: &str) -> Option<usize> {
        self.find(Self::hash(key.as_bytes()), |wanted| {
            std::ptr::eq(wanted, key) || wanted == key
        })
    }

    /// The first key with this `hash` that `is` the one sought.
    #[inline(always)]
    fn find(&self, hash: usize, is: impl Fn(&str) -> bool) -> Option<usize> {
        let mut candidates = self.by_hash[hash];
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            if self.keys.get(i).is_some_and(|wanted| is(wanted)) {
                return Some(i);
            }
            candidates &= candidates - 1;
        }
        None
    }
}

/// Every attribute key the rules may read: [`keys`], then the configured.
fn rule_keys(config: &ExtractConfig) -> impl Iterator<Item = &str> {
    let configured = config.version_attributes.iter().chain(&config.dimensions);
    keys::all()
        .map(|key| -> &str { key })
        .chain(configured.map(String::as_str))
        .chain(config.genai.keys())
}

/// The wanted attributes of one span or resource: the first value of each
/// wanted key (as a decode's lookup finds the first), by its [`Wanted`]
/// index. Cleared by one store per span.
#[derive(Debug)]
struct Found<'a> {
    /// Bit `i` is set when `values[i]` holds this span's value.
    present: u64,
    values: Vec<RawValue<'a>>,
}

impl<'a> Found<'a> {
    fn new(wanted: &Wanted<'_>) -> Self {
        Self {
            present: 0,
            values: vec![RawValue::None; wanted.keys.len()],
        }
    }

    fn clear(&mut self) {
        self.present = 0;
    }

    /// Keeps `value` for key `i` unless an earlier attribute had that key.
    #[inline(always)]
    fn keep(&mut self, i: usize, value: RawValue<'a>) {
        let bit = 1 << i;
        if self.present & bit == 0 {
            if let Some(slot) = self.values.get_mut(i) {
                *slot = value;
                self.present |= bit;
            }
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Option<RawValue<'a>> {
        if self.present & 1 << i == 0 {
            return None;
        }
        self.values.get(i).copied()
    }
}

/// [`Attrs`] over wire attributes. A value that does not parse, or a
/// string that is not UTF-8, reads as no value and sets `bad`, which fails
/// the whole request afterwards as the full decode would.
struct WireAttrs<'s, 'a> {
    wanted: &'s Wanted<'s>,
    found: &'s Found<'a>,
    bad: &'s Cell<Option<WireError>>,
}

impl WireAttrs<'_, '_> {
    #[cold]
    fn fail(&self, e: WireError) -> Option<Val<'static>> {
        self.bad.set(Some(e));
        Some(Val::Other)
    }
}

impl<'a> Attrs<'a> for WireAttrs<'_, 'a> {
    #[inline(always)]
    fn may_carry_phases(&self) -> bool {
        self.found.present & self.wanted.genai != 0
    }

    #[inline(always)]
    fn find(&self, key: &str) -> Option<Val<'a>> {
        let Some(i) = self.wanted.index_of_rule(key) else {
            debug_assert!(
                false,
                "the rules read {key:?}, which is not in extract::keys"
            );
            return None;
        };
        let value = match self.found.get(i)?.parse() {
            Ok(value) => value,
            Err(e) => return self.fail(e),
        };
        Some(match value {
            RawVal::Str(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Val::Str(s),
                Err(_) => return self.fail(WireError::Utf8("AnyValue.string_value")),
            },
            RawVal::Int(i) => Val::Int(i),
            RawVal::Double(d) => Val::Double(d),
            RawVal::Bool(b) => Val::Bool(b),
            RawVal::Other => Val::Other,
        })
    }
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The next field's (tag, wire type), `None` at the end.
    #[inline(always)]
    fn field(&mut self) -> Result<Option<(u32, WireType)>, WireError> {
        let Some(&key) = self.buf.first() else {
            return Ok(None);
        };
        // Tags 1..=15 with a valid wire type: the key is one byte (every
        // field read here); anything else goes the general way.
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            5 => WireType::ThirtyTwoBit,
            _ => return self.field_slow(),
        };
        if !(0x08..0x80).contains(&key) {
            return self.field_slow();
        }
        self.buf = &self.buf[1..];
        Ok(Some((u32::from(key >> 3), wire)))
    }

    #[cold]
    #[inline(never)]
    fn field_slow(&mut self) -> Result<Option<(u32, WireType)>, WireError> {
        Ok(Some(decode_key(&mut self.buf)?))
    }

    /// A varint; one-byte ones without a call.
    #[inline(always)]
    fn raw_varint(&mut self) -> Result<u64, WireError> {
        match self.buf.first() {
            Some(&b) if b < 0x80 => {
                self.buf = &self.buf[1..];
                Ok(u64::from(b))
            }
            _ => Ok(decode_varint(&mut self.buf)?),
        }
    }

    #[inline(always)]
    fn bytes(&mut self, wire: WireType, field: &'static str) -> Result<&'a [u8], WireError> {
        expect(wire, WireType::LengthDelimited, field)?;
        let len = self.raw_varint()?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated(field))?;
        if len > self.buf.len() {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    #[inline(always)]
    fn varint(&mut self, wire: WireType, field: &'static str) -> Result<u64, WireError> {
        expect(wire, WireType::Varint, field)?;
        self.raw_varint()
    }

    #[inline(always)]
    fn fixed64(&mut self, wire: WireType, field: &'static str) -> Result<u64, WireError> {
        expect(wire, WireType::SixtyFourBit, field)?;
        let Some((head, rest)) = self.buf.split_first_chunk::<8>() else {
            return Err(WireError::Truncated(field));
        };
        self.buf = rest;
        Ok(u64::from_le_bytes(*head))
    }

    /// Skips a field: the common wire types here, groups (long deprecated)
    /// through prost.
    #[inline(always)]
    fn skip(&mut self, wire: WireType, tag: u32) -> Result<(), WireError> {
        let len = match wire {
            WireType::Varint => return self.raw_varint().map(drop),
            WireType::LengthDelimited => {
                usize::try_from(self.raw_varint()?).map_err(|_| WireError::SkippedTruncated(tag))?
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::StartGroup | WireType::EndGroup => return self.skip_group(wire, tag),
        };
        match self.buf.get(len..) {
            Some(rest) => {
                self.buf = rest;
                Ok(())
            }
            None => Err(WireError::SkippedTruncated(tag)),
        }
    }

    #[cold]
    fn skip_group(&mut self, wire: WireType, tag: u32) -> Result<(), WireError> {
        Ok(skip_field(
            wire,
            tag,
            &mut self.buf,
            DecodeContext::default(),
        )?)
    }
}

#[inline(always)]
fn expect(actual: WireType, expected: WireType, field: &'static str) -> Result<(), WireError> {
    if actual == expected {
        Ok(())
    } else {
        Err(WireError::WireType {
            field,
            actual,
            expected,
        })
    }
}

fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::Utf8(field))
}

/// Reads the `ExportTraceServiceRequest` in `bytes`, passing each span's
/// sample to `sink` in order, and reports what became of every span exactly
/// as [`super::extract`] would on the decoded message.
///
/// On an error, `sink` may already have taken samples of the spans before
/// the bad bytes: the caller must drop them with the request.
pub fn scan<'a>(
    bytes: &'a [u8],
    config: &ExtractConfig,
    mut sink: impl FnMut(SampleRef<'a>),
) -> Result<ExtractReport, WireError> {
    let mut tally = Tally::new(config);
    let wanted = Wanted::new(config);
    let mut resource_attrs = Found::new(&wanted);
    let mut span_attrs = Found::new(&wanted);
    let mut request = Reader::new(bytes);
    while let Some((tag, wire)) = request.field()? {
        match tag {
            1 => {
                let resource_spans =
                    request.bytes(wire, "ExportTraceServiceRequest.resource_spans")?;
                scan_resource_spans(
                    resource_spans,
                    config,
                    &wanted,
                    &mut tally,
                    &mut resource_attrs,
                    &mut span_attrs,
                    &mut sink,
                )?;
            }
            _ => request.skip(wire, tag)?,
        }
    }
    Ok(tally.finish())
}

fn scan_resource_spans<'a>(
    bytes: &'a [u8],
    config: &ExtractConfig,
    wanted: &Wanted<'_>,
    tally: &mut Tally,
    resource_attrs: &mut Found<'a>,
    span_attrs: &mut Found<'a>,
    sink: &mut impl FnMut(SampleRef<'a>),
) -> Result<(), WireError> {
    // Fields may come in any order: the resource first (every occurrence
    // merges into one, as in a decode), then the spans.
    resource_attrs.clear();
    let mut fields = Reader::new(bytes);
    while let Some((tag, wire)) = fields.field()? {
        match tag {
            1 => {
                let mut resource = Reader::new(fields.bytes(wire, "ResourceSpans.resource")?);
                while let Some((tag, wire)) = resource.field()? {
                    match tag {
                        1 => read_key_value(
                            resource.bytes(wire, "Resource.attributes")?,
                            resource_attrs,
                            wanted,
                        )?,
                        _ => resource.skip(wire, tag)?,
                    }
                }
            }
            _ => fields.skip(wire, tag)?,
        }
    }
    let bad = Cell::new(None);
    let resource = WireAttrs {
        wanted,
        found: resource_attrs,
        bad: &bad,
    };
    let service = service_of(&resource);
    if let Some(e) = bad.take() {
        return Err(e);
    }
    let mut fields = Reader::new(bytes);
    while let Some((tag, wire)) = fields.field()? {
        match tag {
            2 => {
                let mut scope_spans = Reader::new(fields.bytes(wire, "ResourceSpans.scope_spans")?);
                while let Some((tag, wire)) = scope_spans.field()? {
                    match tag {
                        2 => {
                            let span = scope_spans.bytes(wire, "ScopeSpans.spans")?;
                            let fields = read_span(span, span_attrs, wanted)?;
                            let span = SpanFields {
                                kind: fields.kind,
                                name: fields.name,
                                has_parent: fields.has_parent,
                                start_time_unix_nano: fields.start_time_unix_nano,
                                end_time_unix_nano: fields.end_time_unix_nano,
                                status_error: fields.status_error,
                                trace_id: fields.trace_id,
                                attributes: WireAttrs {
                                    wanted,
                                    found: span_attrs,
                                    bad: &bad,
                                },
                            };
                            let result = sample_of(&span, service, &resource, config);
                            if let Some(e) = bad.take() {
                                return Err(e);
                            }
                            if let Some(sample) = tally.count(&span, result) {
                                genai::phases(&span.attributes, &sample, config, &mut *sink);
                                if let Some(e) = bad.take() {
                                    return Err(e);
                                }
                                sink(sample);
                            }
                        }
                        _ => scope_spans.skip(wire, tag)?,
                    }
                }
            }
            _ => fields.skip(wire, tag)?,
        }
    }
    Ok(())
}

/// One span's fields; its `wanted` attributes go to `attrs` (cleared first).
fn read_span<'a>(
    bytes: &'a [u8],
    attrs: &mut Found<'a>,
    wanted: &Wanted<'_>,
) -> Result<SpanFields<'a, ()>, WireError> {
    attrs.clear();
    let mut span = SpanFields {
        kind: 0,
        name: "",
        has_parent: false,
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        status_error: false,
        trace_id: &[],
        attributes: (),
    };
    let mut name: &[u8] = &[];
    let mut status_code = 0i32;
    let mut fields = Reader::new(bytes);
    while let Some((tag, wire)) = fields.field()? {
        match tag {
            1 => span.trace_id = fields.bytes(wire, "Span.trace_id")?,
            4 => span.has_parent = !fields.bytes(wire, "Span.parent_span_id")?.is_empty(),
            5 => name = fields.bytes(wire, "Span.name")?,
            // Enums are int32 on the wire; a decode truncates the same way.
            6 => span.kind = fields.varint(wire, "Span.kind")? as i32,
            7 => span.start_time_unix_nano = fields.fixed64(wire, "Span.start_time_unix_nano")?,
            8 => span.end_time_unix_nano = fields.fixed64(wire, "Span.end_time_unix_nano")?,
            9 => read_key_value(fields.bytes(wire, "Span.attributes")?, attrs, wanted)?,
            15 => {
                // Repeated occurrences merge: the last code seen wins.
                let mut status = Reader::new(fields.bytes(wire, "Span.status")?);
                while let Some((tag, wire)) = status.field()? {
                    match tag {
                        3 => status_code = status.varint(wire, "Status.code")? as i32,
                        _ => status.skip(wire, tag)?,
                    }
                }
            }
            _ => fields.skip(wire, tag)?,
        }
    }
    span.name = utf8(name, "Span.name")?;
    span.status_error = status_code == 2;
    Ok(span)
}

/// Keeps one `KeyValue`'s (unparsed) value in `attrs` if its key is
/// `wanted`; the framing of every attribute is checked the same.
#[inline]
fn read_key_value<'a>(
    bytes: &'a [u8],
    attrs: &mut Found<'a>,
    wanted: &Wanted<'_>,
) -> Result<(), WireError> {
    // What every encoder writes for a short attribute: key (field 1), then
    // one value (field 2) filling the rest, both with one-byte lengths.
    if let [0x0a, key_len, rest @ ..] = bytes {
        let key_len = usize::from(*key_len);
        if key_len < 0x80 && key_len <= rest.len() {
            let (key, rest) = rest.split_at(key_len);
            if let [0x12, value_len, value @ ..] = rest {
                if usize::from(*value_len) < 0x80 && usize::from(*value_len) == value.len() {
                    if let Some(i) = wanted.index(key) {
                        attrs.keep(i, RawValue::One(value));
                    }
                    return Ok(());
                }
            }
        }
    }
    let mut key: &[u8] = &[];
    let mut value = RawValue::None;
    let mut fields = Reader::new(bytes);
    while let Some((tag, wire)) = fields.field()? {
        match tag {
            1 => key = fields.bytes(wire, "KeyValue.key")?,
            // Repeated occurrences merge: the last variant seen wins.
            2 => {
                let bytes = fields.bytes(wire, "KeyValue.value")?;
                value = match value {
                    RawValue::None => RawValue::One(bytes),
                    // Parsed from the whole KeyValue below.
                    _ => RawValue::Repeated(&[]),
                };
            }
            _ => fields.skip(wire, tag)?,
        }
    }
    if let RawValue::Repeated(_) = value {
        value = RawValue::Repeated(bytes);
    }
    if let Some(i) = wanted.index(key) {
        attrs.keep(i, value);
    }
    Ok(())
}

/// The value in an `AnyValue`'s bytes.
#[inline(always)]
fn read_any_value(bytes: &[u8]) -> Result<RawVal<'_>, WireError> {
    // What every encoder writes for a short string or a small integer: the
    // one field filling the value, with a one-byte length or varint.
    match bytes {
        [0x0a, len, string @ ..] if usize::from(*len) == string.len() && *len < 0x80 => {
            Ok(RawVal::Str(string))
        }
        [0x18, int] if *int < 0x80 => Ok(RawVal::Int(i64::from(*int))),
        // Up to 16383: HTTP and gRPC status codes.
        [0x18, low, high] if *low >= 0x80 && *high < 0x80 => {
            Ok(RawVal::Int(i64::from(*low & 0x7f) | i64::from(*high) << 7))
        }
        _ => read_any_value_fields(bytes, RawVal::Other),
    }
}

/// The value in an `AnyValue`'s bytes, field by field; `value` is what an
/// earlier occurrence of the `AnyValue` left (they merge).
fn read_any_value_fields<'a>(
    bytes: &'a [u8],
    mut value: RawVal<'a>,
) -> Result<RawVal<'a>, WireError> {
    let mut fields = Reader::new(bytes);
    while let Some((tag, wire)) = fields.field()? {
        value = match tag {
            1 => RawVal::Str(fields.bytes(wire, "AnyValue.string_value")?),
            2 => RawVal::Bool(fields.varint(wire, "AnyValue.bool_value")? != 0),
            3 => RawVal::Int(fields.varint(wire, "AnyValue.int_value")? as i64),
            4 => RawVal::Double(f64::from_bits(
                fields.fixed64(wire, "AnyValue.double_value")?,
            )),
            5 => {
                fields.bytes(wire, "AnyValue.array_value")?;
                RawVal::Other
            }
            6 => {
                fields.bytes(wire, "AnyValue.kvlist_value")?;
                RawVal::Other
            }
            7 => {
                fields.bytes(wire, "AnyValue.bytes_value")?;
                RawVal::Other
            }
            8 => {
                fields.varint(wire, "AnyValue.string_value_strindex")?;
                RawVal::Other
            }
            _ => {
                fields.skip(wire, tag)?;
                continue;
            }
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::extract::{extract, Interner, Sample};
    use modelgate_fixture::{attr_str, SpanSpec};

    type Read = (ExtractReport, Vec<Sample>);

    /// The reference reader's answer.
    fn decoded(request: &ExportTraceServiceRequest, config: &ExtractConfig) -> Read {
        let mut samples = Vec::new();
        let report = extract(request, config, &mut Interner::new(1024), &mut samples);
        (report, samples)
    }

    /// The wire reader's answer.
    fn scanned(bytes: &[u8], config: &ExtractConfig) -> Result<Read, WireError> {
        let mut interner = Interner::new(1024);
        let mut samples = Vec::new();
        scan(bytes, config, |s| samples.push(interner.intern(s))).map(|r| (r, samples))
    }

    /// Both readers on the same request: (report, samples) each.
    fn both(
        request: &ExportTraceServiceRequest,
        config: &ExtractConfig,
    ) -> (Read, Result<Read, WireError>) {
        (
            decoded(request, config),
            scanned(&request.encode_to_vec(), config),
        )
    }

    const KEYS: &[&str] = &[
        "service.name",
        "http.route",
        "url.path",
        "http.target",
        "http.response.status_code",
        "http.status_code",
        "rpc.grpc.status_code",
        "error.type",
        "db.system",
        "db.system.name",
        "model.version",
        "gen_ai.request.model",
        // A phase and the input size that bands it.
        "gen_ai.latency.time_to_first_token",
        "gen_ai.usage.prompt_tokens",
        "service.version",
        "region",
        "tier",
        "other",
    ];
    const STRINGS: &[&str] = &[
        "",
        "svc",
        "/a",
        "v1",
        "v2",
        "504",
        " 503 ",
        "TimeoutError",
        "DEADLINE",
        "postgres",
        "é/ü",
        "4",
    ];

    fn value() -> impl Strategy<Value = Option<AnyValue>> {
        let v = prop_oneof![
            prop::sample::select(STRINGS).prop_map(|s| any_value::Value::StringValue(s.into())),
            prop_oneof![
                Just(4i64),
                Just(200),
                Just(404),
                Just(408),
                Just(500),
                Just(504),
                any::<i64>()
            ]
            .prop_map(any_value::Value::IntValue),
            prop_oneof![Just(504.0f64), Just(2.5), Just(-0.0), Just(f64::NAN)]
                .prop_map(any_value::Value::DoubleValue),
            any::<bool>().prop_map(any_value::Value::BoolValue),
            Just(any_value::Value::BytesValue(vec![1, 2])),
            Just(any_value::Value::StringValueStrindex(3)),
        ];
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(AnyValue { value: None })),
            8 => v.prop_map(|v| Some(AnyValue { value: Some(v) })),
        ]
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (prop::sample::select(KEYS), value()).prop_map(|(k, value)| KeyValue {
                key: k.into(),
                value,
                ..KeyValue::default()
            }),
            0..8,
        )
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            prop_oneof![Just(vec![]), Just(vec![7u8; 16]), Just(vec![1u8; 5])],
            any::<bool>(),
            prop::sample::select(STRINGS),
            -1i32..7,
            prop_oneof![Just(0u64), Just(1_000), 1u64..5_000_000_000],
            prop_oneof![Just(0u64), Just(900), 1u64..5_000_000_000],
            attrs(),
            prop_oneof![
                Just(None),
                (0i32..4).prop_map(|code| Some(Status {
                    message: "m".into(),
                    code
                }))
            ],
        )
            .prop_map(
                |(trace_id, parent, name, kind, start, end, attributes, status)| Span {
                    trace_id,
                    span_id: vec![3; 8],
                    parent_span_id: if parent { vec![2; 8] } else { vec![] },
                    name: name.into(),
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    status,
                    ..Span::default()
                },
            )
    }

    fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        prop::collection::vec(
            (
                prop::option::of(attrs()),
                prop::collection::vec(prop::collection::vec(span(), 0..5), 0..3),
            )
                .prop_map(|(resource, scopes)| ResourceSpans {
                    resource: resource.map(|attributes| Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|spans| ScopeSpans {
                            spans,
                            ..ScopeSpans::default()
                        })
                        .collect(),
                    schema_url: "s".into(),
                }),
            0..3,
        )
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    fn config() -> impl Strategy<Value = ExtractConfig> {
        (any::<bool>(), prop::option::of(1u64..3_000)).prop_map(|(dims, timeout_ms)| {
            ExtractConfig {
                dimensions: if dims {
                    vec!["region".into(), "tier".into()]
                } else {
                    vec![]
                },
                timeout: timeout_ms.map(Duration::from_millis),
                ..ExtractConfig::default()
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn wire_scan_agrees_with_the_full_decode(request in request(), config in config()) {
            let (reference, wire) = both(&request, &config);
            prop_assert_eq!(Ok(reference), wire);
        }

        #[test]
        fn any_bytes_give_the_same_answer_or_an_error_never_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let wire = scanned(&bytes, &ExtractConfig::default());
            if let Ok(request) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                prop_assert_eq!(wire, Ok(decoded(&request, &ExtractConfig::default())));
            }
        }

        #[test]
        fn cut_or_flipped_requests_never_panic(
            request in request(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = request.encode_to_vec();
            if !bytes.is_empty() {
                let i = flip.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len()));
            }
            let wire = scanned(&bytes, &ExtractConfig::default());
            if let Ok(request) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                prop_assert_eq!(wire, Ok(decoded(&request, &ExtractConfig::default())));
            }
        }
    }

    #[test]
    fn the_wire_reader_bands_a_first_token_as_the_decode_does() {
        use modelgate_fixture::attr_int;
        let request = SpanSpec::server("llm", "chat", 900)
            .attr(attr_int("gen_ai.latency.time_to_first_token", 1))
            .attr(attr_int("gen_ai.usage.prompt_tokens", 3_000))
            .into_request();
        let (reference, wire) = both(&request, &ExtractConfig::default());
        let bands: Vec<_> = reference
            .1
            .iter()
            .map(|s| (s.series.endpoint.phase, s.series.endpoint.input))
            .collect();
        assert_eq!(
            bands,
            [
                (
                    crate::phase::Phase::FirstToken,
                    Some(crate::phase::InputBand::To4k)
                ),
                (crate::phase::Phase::Request, None),
            ]
        );
        assert_eq!(Ok(reference), wire);
    }

    #[test]
    fn every_key_a_valid_configuration_names_has_an_index() {
        use crate::config::{
            GenAiAttributes, MAX_DIMENSIONS, MAX_GENAI_NAMES, MAX_VERSION_ATTRIBUTES,
        };
        let names = |prefix: &str| -> Vec<String> {
            (0..MAX_GENAI_NAMES)
                .map(|i| format!("{prefix}.{i}"))
                .collect()
        };
        let config = ExtractConfig {
            genai: GenAiAttributes {
                queue: names("queue"),
                first_token: names("ttft"),
                per_output_token: names("tpot"),
                output_tokens: names("tokens"),
                input_tokens: names("prompt"),
            },
            version_attributes: (0..MAX_VERSION_ATTRIBUTES)
                .map(|i| format!("v{i}.version"))
                .collect(),
            // One of them a key the rules read anyway: it has one index.
            dimensions: (1..MAX_DIMENSIONS)
                .map(|i| format!("dim.{i}"))
                .chain(["http.route".to_owned()])
                .collect(),
            ..ExtractConfig::default()
        };
        let wanted = Wanted::new(&config);
        let all: Vec<&str> = rule_keys(&config).collect();
        assert_eq!(wanted.keys.len(), all.len() - 1);
        for key in all {
            let i = wanted.index_of_rule(key);
            assert!(i.is_some(), "{key}");
            // A copy of the key, as read from a request, finds the same.
            assert_eq!(wanted.index(key.to_owned().as_bytes()), i, "{key}");
        }
        assert_eq!(wanted.index(b"http.rout"), None);
        assert_eq!(wanted.index(b"dim.0"), None);
    }

    #[test]
    fn fields_out_of_order_and_repeated_read_as_a_decode_merges_them() {
        // The resource after the spans, and twice: its attributes merge.
        let spans = SpanSpec::server("ignored", "op", 5)
            .attr(attr_str("http.route", "/r"))
            .into_request();
        let rs = &spans.resource_spans[0];
        let mut bytes = Vec::new();
        let mut body = Vec::new();
        for scope in &rs.scope_spans {
            prost::encoding::message::encode(2, scope, &mut body);
        }
        let first = Resource {
            attributes: vec![attr_str("model.version", "m1")],
            ..Resource::default()
        };
        let second = Resource {
            attributes: vec![attr_str("service.name", "late")],
            ..Resource::default()
        };
        prost::encoding::message::encode(1, &first, &mut body);
        prost::encoding::message::encode(1, &second, &mut body);
        prost::encoding::bytes::encode(1, &body, &mut bytes);
        let request_of_bytes = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let want = decoded(&request_of_bytes, &ExtractConfig::default());
        let got = scanned(&bytes, &ExtractConfig::default()).unwrap();
        assert_eq!(got, want);
        assert_eq!((got.1[0].service(), got.1[0].version()), ("late", "m1"));
    }

    #[test]
    fn a_repeated_attribute_value_merges_as_in_a_decode() {
        let string = |v: &str| AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        };
        let int = AnyValue {
            value: Some(any_value::Value::IntValue(3)),
        };
        for values in [
            vec![string("a"), int.clone()],
            vec![string("a"), AnyValue { value: None }],
            vec![int, string("b")],
        ] {
            let mut key_value = Vec::new();
            prost::encoding::string::encode(1, &"model.version".to_owned(), &mut key_value);
            for v in &values {
                prost::encoding::message::encode(2, v, &mut key_value);
            }
            let request = SpanSpec::server("svc", "op", 5).into_request();
            let span = &request.resource_spans[0].scope_spans[0].spans[0];
            let mut span_bytes = span.encode_to_vec();
            prost::encoding::bytes::encode(9, &key_value, &mut span_bytes);
            let mut scope = Vec::new();
            prost::encoding::bytes::encode(2, &span_bytes, &mut scope);
            let mut resource_spans = Vec::new();
            prost::encoding::bytes::encode(2, &scope, &mut resource_spans);
            let mut bytes = Vec::new();
            prost::encoding::bytes::encode(1, &resource_spans, &mut bytes);
            let request_of_bytes = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let want = decoded(&request_of_bytes, &ExtractConfig::default());
            let got = scanned(&bytes, &ExtractConfig::default()).unwrap();
            assert_eq!(got, want, "{values:?}");
        }
    }

    #[test]
    fn malformed_bytes_are_errors() {
        let bytes = SpanSpec::server("svc", "op", 5)
            .into_request()
            .encode_to_vec();
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            scan(cut, &ExtractConfig::default(), |_| {}),
            Err(WireError::Truncated(_))
        ));
        // An unread field 2 claiming 5 bytes of the 1 there are.
        assert_eq!(
            scan(&[0x12, 0x05, 0x01], &ExtractConfig::default(), |_| {}),
            Err(WireError::SkippedTruncated(2))
        );
        // Field 1 as a varint.
        assert!(matches!(
            scan(&[0x08, 0x01], &ExtractConfig::default(), |_| {}),
            Err(WireError::WireType { .. })
        ));
        let mut bad = SpanSpec::server("svc", "op", 5).into_request();
        bad.resource_spans[0].scope_spans[0].spans[0].name = "\u{fffd}".into();
        let mut bytes = bad.encode_to_vec();
        let at = bytes
            .windows(3)
            .position(|w| w == "\u{fffd}".as_bytes())
            .unwrap();
        bytes[at] = 0xff;
        assert_eq!(
            scan(&bytes, &ExtractConfig::default(), |_| {}),
            Err(WireError::Utf8("Span.name"))
        );
    }
}
