//! Confluent's wire format: what its serializers put before the encoded record.

/// The byte every Confluent-framed record starts with.
const MAGIC: u8 = 0;
/// The magic byte and the 4-byte schema id.
const HEADER_LEN: usize = 5;

/// Confluent's framing: magic byte 0, then the schema id as 4 bytes big-endian, then the body.
/// Returns `None` when the bytes do not start with the magic byte or are shorter than 5 bytes (such a
/// record renders as one without a schema).
pub fn split(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (header, body) = bytes.split_first_chunk::<HEADER_LEN>()?;
    let [magic, id @ ..] = *header;
    (magic == MAGIC).then(|| (u32::from_be_bytes(id), body))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_returns_the_big_endian_id_and_the_body() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 7, 8]), Some((258, &[7u8, 8][..])));
        assert_eq!(split(&[0, 0xff, 0xff, 0xff, 0xff]), Some((u32::MAX, &[][..])));
    }

    #[test]
    fn split_refuses_a_wrong_magic_byte_or_a_short_header() {
        assert_eq!(split(&[1, 0, 0, 0, 1, 7]), None);
        assert_eq!(split(b"{\"a\":1}"), None);
        assert_eq!(split(&[0, 0, 0, 1]), None);
        assert_eq!(split(&[]), None);
    }
}
