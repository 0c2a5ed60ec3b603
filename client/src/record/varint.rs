//! Zig-zag varints as record batches v2 use them (protobuf's encoding).

use bytes::BufMut;

/// Bytes a zig-zag varint of `value` takes.
#[inline]
pub(crate) fn varint_len(value: i32) -> usize {
    varlong_len(i64::from(value))
}

/// Bytes a zig-zag varlong of `value` takes.
#[inline]
pub(crate) fn varlong_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    // 1 byte per started 7 bits, at least 1.
    let bits = 64 - (zigzag | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub(crate) fn put_varint(buf: &mut impl BufMut, value: i32) {
    put_varlong(buf, i64::from(value));
}

#[inline]
pub(crate) fn put_varlong(buf: &mut impl BufMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buf.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buf.put_u8(zigzag as u8);
}

/// Reads a zig-zag varlong from the front of `buf`, advancing it; `None` if truncated or
/// longer than 10 bytes.
#[inline]
pub(crate) fn get_varlong(buf: &mut &[u8]) -> Option<i64> {
    let mut result: u64 = 0;
    let mut shift = 0;
    loop {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        if shift >= 64 {
            return None;
        }
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Some(((result >> 1) as i64) ^ -((result & 1) as i64))
}

/// Reads a zig-zag varint; `None` if truncated or out of range.
#[inline]
pub(crate) fn get_varint(buf: &mut &[u8]) -> Option<i32> {
    get_varlong(buf).and_then(|v| i32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths_agree() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, value);
            assert_eq!(buf.len(), varlong_len(value), "{value}");
            let mut slice = &buf[..];
            assert_eq!(get_varlong(&mut slice), Some(value));
            assert!(slice.is_empty());
        }
    }
}
