//! Dictionary-encoded column chunks for columns whose values come in runs.
//!
//! The raw syscall stream repeats itself: a thread's calls arrive one run after another, so
//! its pid, comm and cgroup, and often its syscall and result, repeat row after row, and the
//! host never changes. Parquet's own writer looks every value up in a hash table to find its
//! dictionary entry; at millions of rows a second that lookup (hashing and comparing numbers
//! and strings, column by column) was most of the cost of sealing the stream. Here a row
//! whose value equals the row before takes the same entry without a lookup, and an Arrow
//! dictionary column (`comm`, `name`) brings its entries along, so each distinct value is
//! looked up once per run or once per chunk.
//!
//! What comes out is ordinary Parquet that any reader reads: a PLAIN dictionary page and
//! RLE_DICTIONARY data pages (version 1), compressed with the file's zstd level, with an offset
//! index, and the min/max statistics (per chunk, and per page in the column index) the
//! properties ask for, for signed integer columns (`pid`, `tid`). For anything else (a bloom
//! filter, statistics on other types, a chunk with more distinct values than a dictionary page
//! may hold) [`encode_chunk`] says no and the caller writes the column with Parquet's Arrow
//! writer.

use std::collections::HashMap;
use std::hash::Hash;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, DataType, Int32Type, Int64Type, UInt64Type,
};
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, Type as PhysicalType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// A column chunk ready for `SerializedRowGroupWriter::append_column`: its bytes (offsets in
/// the metadata are relative to them) and what the row group needs to know about it.
pub(crate) struct EncodedChunk {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
}

/// Encodes `pieces` (one column's arrays, in row order) as one dictionary-encoded column
/// chunk described by `descr`, or `None` when this encoding does not apply: a type it does
/// not handle, nulls, no rows, a codec other than zstd or none, a bloom filter, statistics on
/// anything but a signed integer, or more distinct values than `props` lets a dictionary page
/// hold.
pub(crate) fn encode_chunk(
    pieces: &[&ArrayRef],
    descr: ColumnDescPtr,
    props: &WriterProperties,
) -> Result<Option<EncodedChunk>> {
    let rows: usize = pieces.iter().map(|p| p.len()).sum();
    if rows == 0
        || pieces.iter().any(|p| p.null_count() > 0)
        || props.bloom_filter_properties(descr.path()).is_some()
        || props.write_page_header_statistics(descr.path())
    {
        return Ok(None);
    }
    let statistics = props.statistics_enabled(descr.path());
    let codec = props.compression(descr.path());
    let level = match codec {
        Compression::ZSTD(level) => Some(level.compression_level()),
        Compression::UNCOMPRESSED => None,
        _ => return Ok(None),
    };
    let limit = props.dictionary_page_size_limit();
    let Some(first) = pieces.first() else {
        return Ok(None);
    };
    let with_statistics = statistics != EnabledStatistics::None;
    let dictionary = match first.data_type() {
        DataType::Int32 => primitive_keys::<Int32Type>(pieces, rows, limit, with_statistics),
        DataType::Int64 => primitive_keys::<Int64Type>(pieces, rows, limit, with_statistics),
        DataType::UInt64 if !with_statistics => {
            primitive_keys::<UInt64Type>(pieces, rows, limit, false)
        }
        DataType::Utf8 if !with_statistics => string_keys(pieces, rows, limit),
        DataType::Dictionary(key, value)
            if !with_statistics && **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            dictionary_keys(pieces, rows, limit)
        }
        _ => None,
    };
    let Some(dictionary) = dictionary else {
        return Ok(None);
    };
    let page_rows = props.data_page_row_count_limit().max(1);
    write_chunk(&dictionary, descr, codec, level, statistics, page_rows).map(Some)
}

/// A chunk's dictionary (its entries PLAIN-encoded, in key order) and each row's key.
struct Keyed {
    plain: Vec<u8>,
    entries: u32,
    keys: Vec<u32>,
    /// Each entry's value, kept exactly when the column has statistics (signed integers
    /// only).
    signed: Option<Vec<i64>>,
}

/// Hands out dictionary keys: one per distinct value, in order of first appearance.
struct Entries<V> {
    index: HashMap<V, u32>,
    plain: Vec<u8>,
    limit: usize,
    signed: Option<Vec<i64>>,
}

impl<V: Hash + Eq + Copy> Entries<V> {
    fn new(limit: usize) -> Self {
        Entries {
            index: HashMap::new(),
            plain: Vec::new(),
            limit,
            signed: None,
        }
    }

    /// The key of `value`, adding it (encoded by `plain`) if it is new; `None` once the
    /// dictionary outgrows its limit.
    fn key_of(&mut self, value: V, plain: impl FnOnce(V, &mut Vec<u8>)) -> Option<u32> {
        if let Some(&key) = self.index.get(&value) {
            return Some(key);
        }
        plain(value, &mut self.plain);
        if self.plain.len() > self.limit {
            return None;
        }
        let key = self.index.len() as u32;
        self.index.insert(value, key);
        Some(key)
    }

    fn into_keyed(self, keys: Vec<u32>) -> Keyed {
        Keyed {
            entries: self.index.len() as u32,
            plain: self.plain,
            keys,
            signed: self.signed,
        }
    }
}

/// The value of the row before and its key: a run of equal values costs one comparison a row.
struct LastKey<V>(Option<(V, u32)>);

impl<V: PartialEq + Copy> LastKey<V> {
    /// The key of `value`: the last one if it is the same value, else `lookup`'s.
    #[inline]
    fn key(&mut self, value: V, lookup: impl FnOnce(V) -> Option<u32>) -> Option<u32> {
        if let Some((seen, key)) = self.0
            && seen == value
        {
            return Some(key);
        }
        let key = lookup(value)?;
        self.0 = Some((value, key));
        Some(key)
    }
}

/// The PLAIN encoding of a fixed-width value: little-endian bytes.
trait PlainValue: Copy {
    fn write_plain(self, out: &mut Vec<u8>);
}

macro_rules! plain_value {
    ($($t:ty),*) => {$(
        impl PlainValue for $t {
            fn write_plain(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
plain_value!(i32, i64, u64);

/// PLAIN for a byte array: its length (u32, little-endian), then its bytes.
fn write_plain_bytes(value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// `signed`: also keep each entry's value as an `i64`, for statistics.
fn primitive_keys<T>(pieces: &[&ArrayRef], rows: usize, limit: usize, signed: bool) -> Option<Keyed>
where
    T: ArrowPrimitiveType,
    T::Native: PlainValue + Hash + Eq,
{
    let mut entries = Entries::new(limit);
    if signed {
        entries.signed = Some(Vec::new());
    }
    let mut keys = Vec::with_capacity(rows);
    let mut last = LastKey(None);
    for piece in pieces {
        for &value in piece.as_primitive_opt::<T>()?.values().iter() {
            keys.push(last.key(value, |value| {
                let key = entries.key_of(value, PlainValue::write_plain)?;
                if let Some(values) = entries.signed.as_mut()
                    && key as usize == values.len()
                {
                    values.push(value.to_i64()?);
                }
                Some(key)
            })?);
        }
    }
    Some(entries.into_keyed(keys))
}

fn string_keys(pieces: &[&ArrayRef], rows: usize, limit: usize) -> Option<Keyed> {
    let mut entries = Entries::new(limit);
    let mut keys = Vec::with_capacity(rows);
    let mut last = LastKey(None);
    for piece in pieces {
        let strings = piece.as_string_opt::<i32>()?;
        for i in 0..strings.len() {
            let value = strings.value(i).as_bytes();
            keys.push(last.key(value, |value| entries.key_of(value, write_plain_bytes))?);
        }
    }
    Some(entries.into_keyed(keys))
}

/// Arrow dictionary arrays: each piece's keys are mapped to the chunk's keys through that
/// piece's values (pieces from different batches have dictionaries of their own), each
/// Arrow key looked up once per piece.
fn dictionary_keys(pieces: &[&ArrayRef], rows: usize, limit: usize) -> Option<Keyed> {
    let mut entries = Entries::new(limit);
    let mut keys = Vec::with_capacity(rows);
    for piece in pieces {
        let dictionary = piece.as_dictionary_opt::<Int32Type>()?;
        let values = dictionary.values().as_string_opt::<i32>()?;
        let mut chunk_key_of = vec![u32::MAX; values.len()];
        let mut last = LastKey(None);
        for &arrow_key in dictionary.keys().values().iter() {
            keys.push(last.key(arrow_key, |arrow_key| {
                let slot = chunk_key_of.get_mut(usize::try_from(arrow_key).ok()?)?;
                if *slot == u32::MAX {
                    let value = values.value(arrow_key as usize).as_bytes();
                    *slot = entries.key_of(value, write_plain_bytes)?;
                }
                Some(*slot)
            })?);
        }
    }
    Some(entries.into_keyed(keys))
}

/// Writes the dictionary page and the data pages (`page_rows` rows each) of a chunk, with
/// chunk statistics when [`Keyed::signed`] is kept and a column index when `statistics` is
/// [`EnabledStatistics::Page`].
fn write_chunk(
    dictionary: &Keyed,
    descr: ColumnDescPtr,
    codec: Compression,
    zstd_level: Option<i32>,
    statistics: EnabledStatistics,
    page_rows: usize,
) -> Result<EncodedChunk> {
    let physical_type = descr.physical_type();
    let signed = dictionary.signed.as_ref();
    let mut column_index =
        (statistics == EnabledStatistics::Page).then(|| ColumnIndexBuilder::new(physical_type));
    let min_max_bytes = |value: i64| match physical_type {
        PhysicalType::INT32 => (value as i32).to_le_bytes().to_vec(),
        _ => value.to_le_bytes().to_vec(),
    };

    let mut compressor = match zstd_level {
        Some(level) => Some(zstd::bulk::Compressor::new(level).map_err(external)?),
        None => None,
    };
    let mut compress = |data: &[u8]| -> Result<Bytes> {
        Ok(match compressor.as_mut() {
            Some(c) => Bytes::from(c.compress(data).map_err(external)?),
            None => Bytes::copy_from_slice(data),
        })
    };

    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let (mut compressed, mut uncompressed) = (0u64, 0u64);

    let dictionary_page = pages.write_page(CompressedPage::new(
        Page::DictionaryPage {
            buf: compress(&dictionary.plain)?,
            num_values: dictionary.entries,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        },
        dictionary.plain.len(),
    ))?;
    compressed += dictionary_page.compressed_size as u64;
    uncompressed += dictionary_page.uncompressed_size as u64;

    let bit_width = bits_for(dictionary.entries.saturating_sub(1));
    let mut offset_index = OffsetIndexBuilder::new();
    let mut first_data_page = None;
    let mut data_pages = 0;
    let mut buf = Vec::new();
    for page_keys in dictionary.keys.chunks(page_rows) {
        buf.clear();
        buf.push(bit_width);
        rle_hybrid(page_keys, bit_width, &mut buf);
        let spec = pages.write_page(CompressedPage::new(
            Page::DataPage {
                buf: compress(&buf)?,
                num_values: page_keys.len() as u32,
                encoding: Encoding::RLE_DICTIONARY,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            },
            buf.len(),
        ))?;
        first_data_page.get_or_insert(spec.offset);
        offset_index.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        offset_index.append_row_count(page_keys.len() as i64);
        if let (Some(index), Some(values)) = (column_index.as_mut(), signed) {
            let (min, max) = min_max(page_keys, values);
            index.append(false, min_max_bytes(min), min_max_bytes(max), 0);
        }
        compressed += spec.compressed_size as u64;
        uncompressed += spec.uncompressed_size as u64;
        data_pages += 1;
    }
    let bytes = Bytes::from(sink.into_inner()?);

    let rows = dictionary.keys.len();
    let mut metadata = ColumnChunkMetaData::builder(descr);
    if let Some(values) = signed {
        // Every entry is some row's value, so the entries' range is the chunk's.
        let min = values.iter().copied().min().unwrap_or_default();
        let max = values.iter().copied().max().unwrap_or_default();
        let chunk_statistics: Statistics = match physical_type {
            PhysicalType::INT32 => {
                ValueStatistics::new(Some(min as i32), Some(max as i32), None, Some(0), false)
                    .with_backwards_compatible_min_max(true)
                    .into()
            }
            PhysicalType::INT64 => ValueStatistics::new(Some(min), Some(max), None, Some(0), false)
                .with_backwards_compatible_min_max(true)
                .into(),
            other => {
                return Err(ParquetError::General(format!(
                    "no statistics for {other} columns"
                )));
            }
        };
        metadata = metadata.set_statistics(chunk_statistics);
    }
    let metadata = metadata
        .set_compression(codec)
        .set_encodings_mask(EncodingMask::new_from_encodings(
            [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
        ))
        .set_page_encoding_stats(vec![
            PageEncodingStats {
                page_type: PageType::DICTIONARY_PAGE,
                encoding: Encoding::PLAIN,
                count: 1,
            },
            PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::RLE_DICTIONARY,
                count: data_pages,
            },
        ])
        .set_total_compressed_size(compressed as i64)
        .set_total_uncompressed_size(uncompressed as i64)
        .set_num_values(rows as i64)
        .set_dictionary_page_offset(Some(dictionary_page.offset as i64))
        .set_data_page_offset(first_data_page.unwrap_or(dictionary_page.offset) as i64)
        .build()?;
    Ok(EncodedChunk {
        close: ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: column_index.map(|index| index.build()).transpose()?,
            offset_index: Some(offset_index.build()),
        },
        bytes,
    })
}

fn external(e: std::io::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// The smallest and largest of the values `keys` stand for (each run looked at once).
fn min_max(keys: &[u32], values: &[i64]) -> (i64, i64) {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let mut previous = None;
    for &key in keys {
        if previous != Some(key) {
            let value = values[key as usize];
            min = min.min(value);
            max = max.max(value);
            previous = Some(key);
        }
    }
    (min, max)
}

/// Bits needed to write `max` (0 for 0: a one-entry dictionary needs no bits per row).
fn bits_for(max: u32) -> u8 {
    (u32::BITS - max.leading_zeros()) as u8
}

/// Parquet's RLE / bit-packing hybrid of `keys` at `bit_width` bits each: runs of 8 or more
/// equal keys as one repeated value, the rest bit-packed in groups of 8. A repeated run may
/// only start where the bit-packed keys before it fill whole groups, so a run first tops the
/// pending group up; only the last group is padded (readers stop at the page's value count).
fn rle_hybrid(keys: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let mut pending_from = 0;
    let mut at = 0;
    while at < keys.len() {
        let value = keys[at];
        let mut end = at + 1;
        while end < keys.len() && keys[end] == value {
            end += 1;
        }
        let top_up = (8 - (at - pending_from) % 8) % 8;
        if end - at >= top_up + 8 {
            let run_from = at + top_up;
            bit_packed(&keys[pending_from..run_from], bit_width, out);
            repeated(value, end - run_from, bit_width, out);
            pending_from = end;
        }
        at = end;
    }
    bit_packed(&keys[pending_from..], bit_width, out);
}

fn repeated(value: u32, count: usize, bit_width: u8, out: &mut Vec<u8>) {
    write_uleb128((count as u64) << 1, out);
    let bytes = (bit_width as usize).div_ceil(8);
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

fn bit_packed(keys: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    if keys.is_empty() {
        return;
    }
    let groups = keys.len().div_ceil(8);
    write_uleb128(((groups as u64) << 1) | 1, out);
    let (mut bits, mut filled) = (0u64, 0u32);
    for i in 0..groups * 8 {
        let key = keys.get(i).copied().unwrap_or(0);
        bits |= u64::from(key) << filled;
        filled += u32::from(bit_width);
        while filled >= 8 {
            out.push(bits as u8);
            bits >>= 8;
            filled -= 8;
        }
    }
}

fn write_uleb128(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes what [`rle_hybrid`] wrote, following the format's definition.
    fn decode(mut data: &[u8], bit_width: u8, count: usize) -> Vec<u32> {
        fn uleb128(data: &mut &[u8]) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let byte = data[0];
                *data = &data[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut keys = Vec::new();
        while keys.len() < count {
            let header = uleb128(&mut data);
            if header & 1 == 0 {
                let bytes = (bit_width as usize).div_ceil(8);
                let mut value = [0u8; 4];
                value[..bytes].copy_from_slice(&data[..bytes]);
                data = &data[bytes..];
                keys.extend(std::iter::repeat_n(
                    u32::from_le_bytes(value),
                    (header >> 1) as usize,
                ));
            } else {
                let values = (header >> 1) as usize * 8;
                let (mut bits, mut filled) = (0u64, 0u32);
                for _ in 0..values {
                    while filled < u32::from(bit_width) {
                        bits |= u64::from(data[0]) << filled;
                        data = &data[1..];
                        filled += 8;
                    }
                    keys.push((bits & ((1u64 << bit_width) - 1)) as u32);
                    bits >>= bit_width;
                    filled -= u32::from(bit_width);
                }
            }
        }
        assert!(data.is_empty(), "{} bytes left over", data.len());
        keys.truncate(count);
        keys
    }

    #[test]
    fn rle_hybrid_round_trips_runs_and_mixtures() {
        let mut cases: Vec<Vec<u32>> = vec![
            vec![0; 1],
            vec![0; 7],
            vec![0; 8],
            vec![5; 8192],
            (0..20).collect(),
        ];
        // Runs just below, at and above the group size, after pending keys of every length.
        for pending in 0..9u32 {
            for run in [7usize, 8, 9, 15, 16, 17] {
                let mut keys: Vec<u32> = (0..pending).map(|i| i % 3).collect();
                keys.extend(std::iter::repeat_n(3, run));
                keys.extend([1, 2, 1]);
                cases.push(keys);
            }
        }
        // Wide keys (more than a byte) in runs and alone.
        cases.push((0..3000).map(|i| (i / 10) * 7 % 1000).collect());
        for keys in cases {
            let max = keys.iter().copied().max().unwrap();
            let bit_width = bits_for(max);
            let mut out = Vec::new();
            rle_hybrid(&keys, bit_width, &mut out);
            assert_eq!(decode(&out, bit_width, keys.len()), keys, "{keys:?}");
        }
    }

    #[test]
    fn long_runs_take_a_few_bytes() {
        let mut out = Vec::new();
        let keys: Vec<u32> = [vec![1; 5000], vec![2; 3000]].concat();
        rle_hybrid(&keys, 2, &mut out);
        // Two repeated runs: a two-byte header and a one-byte value each.
        assert_eq!(out.len(), 6, "{out:?}");
    }

    #[test]
    fn bits_for_counts_what_the_largest_key_needs() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(255), 8);
        assert_eq!(bits_for(256), 9);
    }
}
