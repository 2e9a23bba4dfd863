//! The `syscall` table, the raw stream: its schema and the recycling [`SyscallBuilder`] that
//! appends rows without a per-row struct.

use super::*;

/// Schema of the `syscall` table: the raw stream. `comm` and `name` are dictionary-encoded in
/// memory too, because this table has millions of rows per interval. (`host` stays plain text:
/// engines merge it with the `host=` partition column, which is text.)
///
/// `ktime_slack_ns` says how exact a row's time is. Null: the recorder read the clock for this
/// call, and `ktime_ns` is when it returned. Otherwise (by default most calls of a busy thread
/// do not read the clock, which is what makes recording every call affordable) the call
/// returned after `ktime_ns` and at most `ktime_slack_ns` later; `ktime_ns` still orders the
/// rows of a thread and of a CPU exactly.
pub static SYSCALL_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields: Vec<Field> = common_fields()
        .into_iter()
        .map(|f| {
            if f.name() == "comm" {
                Field::new(f.name(), dict.clone(), false)
            } else {
                f
            }
        })
        .chain([
            Field::new("nr", DataType::Int32, false),
            Field::new("name", dict.clone(), false),
            Field::new("ret", DataType::Int64, false),
            Field::new("ktime_slack_ns", DataType::UInt64, true),
        ])
        .collect();
    Arc::new(Schema::new(fields))
});

/// Raw-stream rows held as plain columns until sealed.
///
/// The raw stream is the largest table by far (every syscall of the machine), so appending a
/// row is a handful of `Vec` pushes: the thread's `comm` is interned once per run of rows
/// from that thread ([`SyscallBuilder::intern_comm`]), the host (the same for every row) and
/// the syscall `name` (a function of `nr`) are only materialised by
/// [`SyscallBuilder::finish`], and `container_id` is filled at seal time.
///
/// Rows are kept apart by [`SyscallRow::source`] and come out source by source, each
/// source's rows in the order they came. The recorder's sources are CPUs, whose rows arrive in
/// time order, so the batch comes out in long time-ordered runs without a sort. The per-source
/// columns keep their memory across [`SyscallBuilder::finish`] (down to what recent batches
/// needed), so a recorder that reuses its builder does not grow and fault in fresh vectors
/// for every segment. The batch's own columns can come back too, once sealed
/// ([`SyscallBuilder::recycle`]), and the next batch is built in their memory.
#[derive(Default)]
pub struct SyscallBuilder {
    sources: Vec<SourceRows>,
    comms: Vec<String>,
    comm_keys: HashMap<String, i32>,
    spare: SpareColumns,
}

/// Column vectors of sealed batches, for the next batch. Writing a batch into memory that is
/// already mapped, rather than into fresh pages the kernel must clear and map one by one, is
/// what this saves: at millions of rows a second that was a third of the recorder's drain
/// thread. Holds at most one batch's worth of each kind.
#[derive(Default)]
struct SpareColumns {
    i32s: Vec<Vec<i32>>,
    i64s: Vec<Vec<i64>>,
    u64s: Vec<Vec<u64>>,
    bytes: Vec<Vec<u8>>,
}

impl SpareColumns {
    /// A batch of [`SYSCALL_SCHEMA`] uses this many vectors of each kind: pid, tid, comm, nr
    /// and name keys and the host's offsets; time and ret; ktime_ns, cgroup_id and the slack;
    /// the host's bytes.
    const I32S: usize = 6;
    const I64S: usize = 2;
    const U64S: usize = 3;
    const BYTES: usize = 1;

    /// An empty vector for `len` values: the smallest spare one it fits in, else the largest
    /// (which grows), else a new one. A spare much larger than `len` stays for a larger batch.
    fn take<T>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
        let fits = |v: &Vec<T>| v.capacity() >= len;
        let best = (0..pool.len())
            .filter(|&i| fits(&pool[i]))
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))
            .filter(|&i| pool[i].capacity() <= 2 * len.max(4096));
        match best {
            Some(i) => {
                let mut spare = pool.swap_remove(i);
                spare.clear();
                spare.reserve(len);
                spare
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `buffer`'s memory if it is a whole vector nothing else shares and the pool has
    /// room.
    fn keep<T: arrow::datatypes::ArrowNativeType>(
        pool: &mut Vec<Vec<T>>,
        max: usize,
        buffer: arrow::buffer::Buffer,
    ) {
        if pool.len() < max
            && let Ok(vector) = buffer.into_vec::<T>()
        {
            pool.push(vector);
        }
    }

    fn recycle(&mut self, batch: RecordBatch) {
        let columns = batch.columns().to_vec();
        drop(batch);
        for column in columns {
            // Buffers outlive the array only here, so a column no one else holds gives its
            // memory back whole.
            let data = column.to_data();
            drop(column);
            let data_type = data.data_type().clone();
            let buffers = data.buffers().to_vec();
            drop(data);
            let mut buffers = buffers.into_iter();
            let (Some(first), second) = (buffers.next(), buffers.next()) else {
                continue;
            };
            match (data_type, second) {
                (DataType::Int32 | DataType::Dictionary(_, _), None) => {
                    Self::keep(&mut self.i32s, Self::I32S, first)
                }
                (DataType::Int64 | DataType::Timestamp(_, _), None) => {
                    Self::keep(&mut self.i64s, Self::I64S, first)
                }
                (DataType::UInt64, None) => Self::keep(&mut self.u64s, Self::U64S, first),
                (DataType::Utf8, Some(values)) => {
                    Self::keep(&mut self.i32s, Self::I32S, first);
                    Self::keep(&mut self.bytes, Self::BYTES, values);
                }
                _ => {}
            }
        }
    }
}

/// The rows of one source, column by column.
#[derive(Default)]
struct SourceRows {
    time: Vec<i64>,
    ktime_ns: Vec<u64>,
    pid: Vec<i32>,
    tid: Vec<i32>,
    comm: Vec<i32>,
    cgroup_id: Vec<u64>,
    nr: Vec<i32>,
    ret: Vec<i64>,
    /// [`SyscallRow::ktime_slack_ns`], 0 for `None`.
    ktime_slack_ns: Vec<u64>,
    /// Rows held lately: the last batch's, or three quarters of the previous value if that
    /// is more.
    recent_rows: usize,
}

impl SourceRows {
    /// Empties the columns, keeping at most about twice the memory their recent batches
    /// needed: one burst does not pin its memory for good (it fades batch by batch), and a
    /// short batch between full ones (a seal on the timer) does not give up memory the next
    /// full one faults in again.
    fn clear(&mut self) {
        self.recent_rows = self.time.len().max(self.recent_rows - self.recent_rows / 4);
        let len = self.recent_rows;
        fn clear_column<T>(column: &mut Vec<T>, len: usize) {
            column.clear();
            if column.capacity() > 2 * len {
                column.shrink_to(len);
            }
        }
        clear_column(&mut self.time, len);
        clear_column(&mut self.ktime_ns, len);
        clear_column(&mut self.pid, len);
        clear_column(&mut self.tid, len);
        clear_column(&mut self.comm, len);
        clear_column(&mut self.cgroup_id, len);
        clear_column(&mut self.nr, len);
        clear_column(&mut self.ret, len);
        clear_column(&mut self.ktime_slack_ns, len);
    }
}

/// Sources from this one on share one list (the recorder's sources, CPU numbers, are far
/// below it): a bogus source must not allocate a list per number.
const MAX_SOURCES: usize = 4096;

/// A string column holding `value` `rows` times, built in bulk (in `spare` vectors where it
/// has them).
fn repeated_string(value: &str, rows: usize, spare: &mut SpareColumns) -> ArrayRef {
    let fits = |n: usize| i32::try_from(n).is_ok();
    if !value.len().checked_mul(rows).is_some_and(fits) || !fits(rows) {
        // Beyond 32-bit offsets: the checked way says so.
        return Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            value, rows,
        )));
    }
    let len = value.len() as i32;
    let mut offsets = SpareColumns::take(&mut spare.i32s, rows + 1);
    offsets.extend((0..=rows as i32).map(|i| i * len));
    let mut values = SpareColumns::take(&mut spare.bytes, value.len() * rows);
    for _ in 0..rows {
        values.extend_from_slice(value.as_bytes());
    }
    // SAFETY: offsets start at 0, grow by the length of a valid UTF-8 string and end at the
    // length of `values`, which is that string repeated.
    Arc::new(unsafe {
        StringArray::new_unchecked(
            arrow::buffer::OffsetBuffer::new_unchecked(offsets.into()),
            values.into(),
            None,
        )
    })
}

/// `values` as a column with nulls where they are 0.
fn nonzero_or_null(values: Vec<u64>) -> UInt64Array {
    let valid = BooleanBuffer::collect_bool(values.len(), |i| values[i] != 0);
    let nulls = Some(NullBuffer::new(valid)).filter(|n| n.null_count() > 0);
    UInt64Array::new(values.into(), nulls)
}

/// One raw-stream row for [`SyscallBuilder::append`]; `comm` is a key from
/// [`SyscallBuilder::intern_comm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallRow {
    pub time_micros: i64,
    pub ktime_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub comm: i32,
    pub cgroup_id: u64,
    pub nr: i32,
    pub ret: i64,
    /// `None` when `ktime_ns` is when the call returned; otherwise it returned after
    /// `ktime_ns` and at most this much later (the recorder did not read the clock for it).
    pub ktime_slack_ns: Option<u64>,
    /// Where the row came from (the recorder: the CPU); not stored, it orders the batch.
    pub source: u32,
}

impl SyscallBuilder {
    pub fn len(&self) -> usize {
        self.sources.iter().map(|s| s.time.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.iter().all(|s| s.time.is_empty())
    }

    /// Takes back the columns of a batch this builder finished, once it is sealed and nothing
    /// else holds them, to build the next batches in their memory. Columns still shared, or
    /// more than one batch's worth, are simply dropped.
    pub fn recycle(&mut self, batch: RecordBatch) {
        self.spare.recycle(batch);
    }

    /// The key of `comm` for [`SyscallRow::comm`].
    pub fn intern_comm(&mut self, comm: &str) -> i32 {
        if let Some(&key) = self.comm_keys.get(comm) {
            return key;
        }
        let key = self.comms.len() as i32;
        self.comms.push(comm.to_string());
        self.comm_keys.insert(comm.to_string(), key);
        key
    }

    #[inline]
    pub fn append(&mut self, row: SyscallRow) {
        let at = (row.source as usize).min(MAX_SOURCES - 1);
        if at >= self.sources.len() {
            self.sources.resize_with(at + 1, SourceRows::default);
        }
        let rows = &mut self.sources[at];
        rows.time.push(row.time_micros);
        rows.ktime_ns.push(row.ktime_ns);
        rows.pid.push(row.pid);
        rows.tid.push(row.tid);
        rows.comm.push(row.comm);
        rows.cgroup_id.push(row.cgroup_id);
        rows.nr.push(row.nr);
        rows.ret.push(row.ret);
        // 0 stands for "read the clock": a slack of 0 is kept as 1 (a bound may only grow).
        rows.ktime_slack_ns
            .push(row.ktime_slack_ns.map_or(0, |s| s.max(1)));
    }

    /// Turns the rows into a batch of [`SYSCALL_SCHEMA`] and starts over, keeping the
    /// builder's memory for the next batch. `name_of` names a syscall number (`None`:
    /// "unknown").
    pub fn finish(
        &mut self,
        host: &str,
        name_of: impl Fn(i32) -> Option<&'static str>,
    ) -> RecordBatch {
        let rows = self.len();
        // Source after source, into spare vectors or ones of the exact size (handed to Arrow
        // as they are).
        fn concat<T: Copy>(
            sources: &[SourceRows],
            rows: usize,
            column: impl Fn(&SourceRows) -> &Vec<T>,
            spare: &mut Vec<Vec<T>>,
        ) -> Vec<T> {
            let mut out = SpareColumns::take(spare, rows);
            for source in sources {
                out.extend_from_slice(column(source));
            }
            out
        }
        let (sources, spare) = (&self.sources, &mut self.spare);
        let time = concat(sources, rows, |s| &s.time, &mut spare.i64s);
        let ktime_ns = concat(sources, rows, |s| &s.ktime_ns, &mut spare.u64s);
        let pid = concat(sources, rows, |s| &s.pid, &mut spare.i32s);
        let tid = concat(sources, rows, |s| &s.tid, &mut spare.i32s);
        let comm = concat(sources, rows, |s| &s.comm, &mut spare.i32s);
        let cgroup_id = concat(sources, rows, |s| &s.cgroup_id, &mut spare.u64s);
        let nr = concat(sources, rows, |s| &s.nr, &mut spare.i32s);
        let ret = concat(sources, rows, |s| &s.ret, &mut spare.i64s);
        let slack = concat(sources, rows, |s| &s.ktime_slack_ns, &mut spare.u64s);
        for source in &mut self.sources {
            source.clear();
        }
        let comms = std::mem::take(&mut self.comms);
        self.comm_keys.clear();

        // Names: one dictionary entry per distinct number in the batch, found through a table
        // indexed by number (syscall numbers are small; others share the "unknown" entry).
        const TABLE: usize = 1024;
        let mut names: Vec<&str> = Vec::new();
        let mut key_of_nr = [-1i32; TABLE];
        let mut unknown = -1i32;
        let mut key = |nr: i32| -> i32 {
            let slot = match usize::try_from(nr) {
                Ok(i) if i < TABLE => &mut key_of_nr[i],
                _ => &mut unknown,
            };
            if *slot < 0 {
                let name = usize::try_from(nr)
                    .ok()
                    .filter(|&i| i < TABLE)
                    .and_then(|_| name_of(nr))
                    .unwrap_or("unknown");
                // "unknown" once, whichever number brought it in.
                *slot = match names.iter().position(|n| *n == name) {
                    Some(at) => at as i32,
                    None => {
                        names.push(name);
                        names.len() as i32 - 1
                    }
                };
            }
            *slot
        };
        let mut name_keys = SpareColumns::take(&mut self.spare.i32s, rows);
        name_keys.extend(nr.iter().map(|&nr| key(nr)));
        let dictionary = |keys: Vec<i32>, values: StringArray| -> ArrayRef {
            // SAFETY: every key was handed out by the dictionary's own interning (comms by
            // `intern_comm`, names by `key` above), so each indexes a value; checking millions
            // of keys again is what this skips.
            Arc::new(unsafe {
                DictionaryArray::<Int32Type>::new_unchecked(
                    Int32Array::from(keys),
                    Arc::new(values),
                )
            })
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
            Arc::new(UInt64Array::from(ktime_ns)),
            repeated_string(host, rows, &mut self.spare),
            Arc::new(Int32Array::from(pid)),
            Arc::new(Int32Array::from(tid)),
            dictionary(comm, StringArray::from(comms)),
            Arc::new(UInt64Array::from(cgroup_id)),
            arrow::array::new_null_array(&DataType::Utf8, rows),
            Arc::new(Int32Array::from(nr)),
            dictionary(name_keys, StringArray::from(names)),
            Arc::new(Int64Array::from(ret)),
            Arc::new(nonzero_or_null(slack)),
        ];
        batch(&SYSCALL_SCHEMA, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_batches_lend_their_memory_to_the_next_ones() {
        /// Where each buffer of each column of `batch` lives.
        fn addresses(batch: &RecordBatch) -> Vec<usize> {
            batch
                .columns()
                .iter()
                .flat_map(|c| c.to_data().buffers().to_vec())
                .filter(|b| !b.is_empty())
                .map(|b| b.as_ptr() as usize)
                .collect()
        }
        let fill = |b: &mut SyscallBuilder, rows: u64, base: u64| {
            let comm = b.intern_comm("sh");
            for i in 0..rows {
                b.append(SyscallRow {
                    time_micros: (base + i) as i64,
                    ktime_ns: base + i,
                    pid: 7,
                    tid: 8,
                    comm,
                    cgroup_id: 9,
                    nr: 39,
                    ret: (base + i) as i64,
                    ktime_slack_ns: (i % 2 == 0).then_some(3),
                    source: (i % 3) as u32,
                });
            }
        };
        /// Where the spare vectors live.
        fn spare(b: &SyscallBuilder) -> Vec<usize> {
            let s = &b.spare;
            (s.i32s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.i64s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.u64s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.bytes.iter().map(|v| v.as_ptr() as usize))
                .collect()
        }
        let mut b = SyscallBuilder::default();
        fill(&mut b, 10_000, 0);
        let first = b.finish("node-1", |_| Some("getpid"));
        b.recycle(first);
        let lent = spare(&b);
        // Every column vector: six of i32, two of i64, three of u64, the host's bytes.
        assert_eq!(lent.len(), 12);
        fill(&mut b, 9_000, 50_000);
        let second = b.finish("node-1", |_| Some("getpid"));
        assert!(spare(&b).is_empty());
        let used = addresses(&second);
        assert!(
            lent.iter().all(|a| used.contains(a)),
            "the second batch is built in the first one's memory"
        );
        // ... and holds its own rows, not the first one's.
        let mut expected = SyscallBuilder::default();
        fill(&mut expected, 9_000, 50_000);
        assert_eq!(second, expected.finish("node-1", |_| Some("getpid")));

        // A batch someone still holds gives nothing back.
        let held = second.clone();
        b.recycle(second);
        assert!(spare(&b).is_empty());
        drop(held);
    }

    #[test]
    fn repeated_strings_are_whole_strings() {
        use arrow::array::AsArray;
        let texts = |value: &str, rows: usize| -> Vec<String> {
            let column = repeated_string(value, rows, &mut SpareColumns::default());
            let column = column.as_string::<i32>();
            column.iter().map(|v| v.unwrap().to_string()).collect()
        };
        assert_eq!(texts("node-1", 3), ["node-1", "node-1", "node-1"]);
        assert_eq!(texts("", 2), ["", ""]);
        assert!(texts("node-1", 0).is_empty());
        // Many rows: still the same string everywhere.
        let many = texts("h", 5 << 20);
        assert!(many.len() == 5 << 20 && many.iter().all(|v| v == "h"));
    }
}
