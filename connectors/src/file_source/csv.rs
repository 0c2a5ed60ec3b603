//! CSV (RFC 4180) records from a byte buffer that may end in the middle of one, and rows to
//! JSON objects by the header.
//!
//! A file being tailed can end anywhere, also inside a quoted field that holds a newline, so
//! the parser returns only records whose terminating newline (outside quotes) it has seen,
//! and how many bytes they used; the rest waits for more data.

use serde_json::Value;

/// One complete record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// Offset of the record's first byte in the parsed buffer.
    pub start: usize,
    /// The fields, unquoted. Bytes, not text: a record that is not UTF-8 is rejected by the
    /// caller with its position, not by the parser.
    pub fields: Vec<Vec<u8>>,
}

/// Parses complete records from `data`, at most `max` of them. Returns them and the number
/// of bytes they used (the offset just after the last one's newline). Empty lines are
/// consumed and skipped.
pub fn parse_records(data: &[u8], max: usize) -> (Vec<CsvRecord>, usize) {
    let mut records = Vec::new();
    let mut consumed = 0;
    while records.len() < max {
        match parse_one(&data[consumed..]) {
            Some((fields, used)) => {
                let blank = fields.len() == 1 && fields[0].is_empty();
                if !blank {
                    records.push(CsvRecord {
                        start: consumed,
                        fields,
                    });
                }
                consumed += used;
            }
            None => break,
        }
    }
    (records, consumed)
}

/// One record from the start of `data` and the bytes it used, or `None` when `data` does not
/// hold a whole record yet.
fn parse_one(data: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut in_quotes = false;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if in_quotes {
            if b == b'"' {
                match data.get(i + 1) {
                    Some(b'"') => {
                        field.push(b'"');
                        i += 2;
                        continue;
                    }
                    Some(_) => in_quotes = false,
                    // A quote at the very end: an escaped quote or the closing one? Only
                    // the next byte tells.
                    None => return None,
                }
            } else {
                field.push(b);
            }
            i += 1;
            continue;
        }
        match b {
            b',' => fields.push(std::mem::take(&mut field)),
            // Opening quote only at the start of a field; elsewhere it is data (lenient, as
            // spreadsheet exports sometimes have stray quotes).
            b'"' if field.is_empty() => in_quotes = true,
            b'\r' if data.get(i + 1) == Some(&b'\n') => {}
            b'\n' => {
                fields.push(field);
                return Some((fields, i + 1));
            }
            _ => field.push(b),
        }
        i += 1;
    }
    None
}

/// The JSON value of a CSV field: with `infer_types`, integers (without leading zeros, so
/// codes such as `007` stay text), finite floats, `true`/`false`, and the empty field as
/// null; everything else (and everything without `infer_types`) a string.
pub fn field_value(text: &str, infer_types: bool) -> Value {
    if !infer_types {
        return Value::String(text.to_string());
    }
    if text.is_empty() {
        return Value::Null;
    }
    match text {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain_number = !digits.is_empty()
        && digits.bytes().all(|b| {
            b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-' || b == b'+'
        })
        && digits.as_bytes()[0].is_ascii_digit()
        && !(digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1] != b'.');
    if plain_number {
        if let Ok(n) = text.parse::<i64>() {
            return Value::from(n);
        }
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// A JSON object text of `header` -> `fields`, in header order (a `Map` would sort them).
/// `None` when a field is not UTF-8; the caller checks the field count.
pub fn row_to_json(header: &[String], fields: &[Vec<u8>], infer_types: bool) -> Option<String> {
    let mut out = String::from("{");
    for (i, (name, raw)) in header.iter().zip(fields).enumerate() {
        let text = std::str::from_utf8(raw).ok()?;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(name.clone()).to_string());
        out.push(':');
        out.push_str(&field_value(text, infer_types).to_string());
    }
    out.push('}');
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn fields(record: &CsvRecord) -> Vec<&str> {
        record
            .fields
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    #[test]
    fn quoted_fields_escaped_quotes_crlf_and_embedded_newlines() {
        let data = b"a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n\n1,,3\n";
        let (records, used) = parse_records(data, 100);
        assert_eq!(used, data.len());
        assert_eq!(records.len(), 3);
        assert_eq!(fields(&records[0]), ["a", "b", "c"]);
        assert_eq!(fields(&records[1]), ["x, y", "say \"hi\"", "two\nlines"]);
        assert_eq!(fields(&records[2]), ["1", "", "3"]);
        assert_eq!(records[1].start, 7);
    }

    #[test]
    fn a_record_without_its_newline_waits_even_inside_quotes() {
        let full = b"id,text\n1,\"half\nway\"\n";
        // Every cut before the last newline yields only the header (or nothing).
        for cut in 0..full.len() {
            let (records, used) = parse_records(&full[..cut], 100);
            let expected = if cut >= 8 { 1 } else { 0 };
            assert_eq!(records.len(), expected, "cut {cut}");
            assert_eq!(used, if cut >= 8 { 8 } else { 0 }, "cut {cut}");
        }
        let (records, used) = parse_records(full, 100);
        assert_eq!((records.len(), used), (2, full.len()));
    }

    #[test]
    fn max_limits_the_records_and_the_bytes_used() {
        let (records, used) = parse_records(b"1\n2\n3\n", 2);
        assert_eq!(records.len(), 2);
        assert_eq!(used, 4);
    }

    #[test]
    fn types_are_inferred_without_eating_leading_zeros() {
        let cases = [
            ("42", json!(42)),
            ("-7", json!(-7)),
            ("0", json!(0)),
            ("2.5", json!(2.5)),
            ("0.5", json!(0.5)),
            ("1e3", json!(1000.0)),
            ("007", json!("007")),
            ("true", json!(true)),
            ("", json!(null)),
            ("12abc", json!("12abc")),
            ("NaN", json!("NaN")),
            ("-", json!("-")),
            ("99999999999999999999", json!(1e20)),
        ];
        for (text, want) in cases {
            assert_eq!(field_value(text, true), want, "{text}");
        }
        assert_eq!(field_value("42", false), json!("42"));
    }

    #[test]
    fn rows_become_objects_in_header_order() {
        let header = vec!["zeta".to_string(), "alpha".to_string()];
        let row = row_to_json(&header, &[b"1".to_vec(), b"x\"y".to_vec()], true).unwrap();
        assert_eq!(row, r#"{"zeta":1,"alpha":"x\"y"}"#);
        assert_eq!(row_to_json(&header, &[vec![0xff], vec![]], true), None);
    }
}
