//! Reads the Prometheus text exposition format (0.0.4), the format every broker's `/metrics`
//! answers: only what the console needs, metric samples with their labels and values.
//! Comments, `# HELP` and `# TYPE` lines are skipped.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// The metric name, with its `_bucket`/`_sum`/`_count` suffix for histograms.
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl MetricSample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample: its number (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExpositionError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Every sample of an exposition, in order.
pub fn parse(text: &str) -> Result<Vec<MetricSample>, ExpositionError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        samples.push(parse_line(line).map_err(|reason| ExpositionError {
            line: index + 1,
            reason,
        })?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<MetricSample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| "a metric name without a value".to_string())?;
    let name = &line[..name_end];
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remainder;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("`{value_text}` is not a number"))?;
    Ok(MetricSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Label pairs, as written.
type Labels = Vec<(String, String)>;

/// Labels up to the closing brace, and what follows it.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text
            .find('=')
            .ok_or_else(|| "a label without `=`".to_string())?;
        let key = text[..eq].trim().to_string();
        let after = text[eq + 1..].trim_start();
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("label `{key}` has an unquoted value"))?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label `{key}` ends inside an escape")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label `{key}` has no closing quote")),
            }
        };
        labels.push((key, value));
        text = quoted[end + 1..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP x help\n# TYPE x counter\nx_total 3\n\
            h_bucket{request=\"Produce\",le=\"+Inf\"} 7 1700000000\n\
            g{a=\"q\\\"uote\\\\\",b=\"line\\nbreak\",} NaN\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "x_total");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].label("request"), Some("Produce"));
        assert_eq!(samples[1].label("le"), Some("+Inf"));
        assert_eq!(samples[1].value, 7.0);
        assert_eq!(samples[2].label("a"), Some("q\"uote\\"));
        assert_eq!(samples[2].label("b"), Some("line\nbreak"));
        assert!(samples[2].value.is_nan());
    }

    #[test]
    fn malformed_lines_name_their_line() {
        for bad in [
            "x",
            "x{a=\"1\"}",
            "x{a=1} 2",
            "x{a=\"1} 2",
            "x notanumber",
            "1x 2",
        ] {
            let error = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert_eq!(error.line, 2, "{bad}: {error}");
        }
    }

    proptest! {
        /// Whatever a scrape returns (a broken proxy, another program), parsing never panics.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn written_samples_read_back(
            name in "[a-z_][a-z0-9_]{0,20}",
            labels in proptest::collection::vec(("[a-z]{1,5}", "[ -~]{0,10}"), 0..4),
            value in -1e9f64..1e9,
        ) {
            let written: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let line = format!("{name}{{{}}} {value}", written.join(","));
            let samples = parse(&line).unwrap();
            prop_assert_eq!(&samples[0].name, &name);
            prop_assert_eq!(&samples[0].labels, &labels);
            prop_assert_eq!(samples[0].value, value);
        }
    }
}
