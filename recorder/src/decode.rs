//! Turning ring-buffer records into store rows.
//!
//! Pure functions, so the kernel's encodings (exit status words, NUL-separated argv, fixed-size
//! comm) are tested without loading anything.

use quarry_recorder_common::{
    CallEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent, KIND_CALL, KIND_CALL_ENTRY, KIND_EXEC,
    KIND_EXIT, KIND_FORK, KIND_RAW_BATCH, KIND_TCP_STATE, KPATH_NONE, KPATH_OUTSIDE_ROOT,
    KPATH_PSEUDO, KPATH_ROOT, KernelPath, RAW_BATCH_HEADER_LEN, RAW_KTIME_UNREAD, RAW_SLOT_THREAD,
    RawBatchHeader, RawSlot, RawThread, TcpStateEvent, read_record,
};
use quarry_store::schema::{ProcessEvent, ProcessFacts, ProcessRow, RowIdentity, path_resolution};

use crate::clock::WallClock;
use crate::exehash::ExeIdentity;

/// A decoded ring-buffer record. Process records become rows at once; syscall records are
/// handed on as they are (the raw stream's batches are appended without a row struct, entries
/// and exits are decoded by [`crate::calls::Calls`]).
#[derive(Debug, Clone)]
pub enum Record<'a> {
    /// A fork, exec or exit, with what the kernel said of where it runs (the rest of its
    /// facts are the recorder's to fill: [`crate::calls::Calls::process`]).
    /// An exec also carries the executed file's identity (zero otherwise).
    Process(ProcessRow, Box<ProcessFacts>, ExeIdentity),
    RawBatch(RawSlots<'a>),
    Call(Box<CallEvent>),
    TcpState(TcpStateEvent),
}

/// Why a record could not be decoded: a kernel/user mismatch, counted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Short { len: usize },
    UnknownKind(u32),
}

/// The path a kernel walk found and its `path_resolution`; `(None, lexical)` when no walk was
/// made. A name that is not UTF-8 has its invalid bytes replaced (U+FFFD), so such a path
/// never equals a real one by accident.
pub fn kernel_path(k: &KernelPath) -> (Option<String>, &'static str) {
    if k.status == KPATH_PSEUDO {
        return (None, path_resolution::PSEUDO);
    }
    let Some(parts) = k.components() else {
        return (None, path_resolution::LEXICAL);
    };
    let mut path = String::new();
    let absolute = matches!(k.status, KPATH_ROOT | KPATH_OUTSIDE_ROOT);
    for (i, part) in parts.enumerate() {
        if absolute || i > 0 {
            path.push('/');
        }
        path.push_str(&String::from_utf8_lossy(part));
    }
    let how = match k.status {
        KPATH_ROOT => path_resolution::KERNEL,
        KPATH_OUTSIDE_ROOT => path_resolution::KERNEL_OUTSIDE_ROOT,
        KPATH_NONE => path_resolution::LEXICAL,
        _ => path_resolution::TRUNCATED,
    };
    if path.is_empty() && absolute {
        path.push('/');
    }
    (Some(path), how)
}

/// Text up to the first NUL, with invalid UTF-8 replaced.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Splits the argument area of a new image. `total` is its full length in the process, so the
/// last argument is known to be cut when fewer bytes were copied.
pub fn split_argv(copied: &[u8], total: usize) -> (Vec<String>, bool) {
    let truncated = total > copied.len();
    let body = copied.strip_suffix(&[0]).unwrap_or(copied);
    if body.is_empty() {
        return (Vec::new(), truncated);
    }
    let argv = body
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (argv, truncated)
}

/// Splits the kernel's `exit_code` word into (exit status, signal, core dumped).
pub fn split_exit_code(code: u32) -> (Option<i32>, Option<i32>, bool) {
    let signal = (code & 0x7f) as i32;
    if signal == 0 {
        (Some(((code >> 8) & 0xff) as i32), None, false)
    } else {
        (None, Some(signal), code & 0x80 != 0)
    }
}

/// The identity columns of a record's header.
pub fn identity(h: &EventHeader, clock: &WallClock) -> RowIdentity {
    RowIdentity {
        time: clock.to_utc(h.ktime_ns),
        ktime_ns: h.ktime_ns,
        pid: h.pid as i32,
        tid: h.tid as i32,
        comm: c_string(&h.comm),
        cgroup_id: h.cgroup_id,
        container_id: None,
    }
}

/// One item of a raw-stream batch: a thread record (two slots) or a call (one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawItem {
    /// The thread the following calls belong to.
    Thread(RawThread),
    Call(RawCall),
}

/// A call of the raw stream, with its time settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCall {
    pub nr: i32,
    pub tid: u32,
    pub ret: i64,
    /// When the call returned; for a call that did not read the clock, a lower bound: the
    /// CPU's previous reading plus one nanosecond per call since, so a CPU's (and a thread's)
    /// calls stay in order.
    pub ktime_ns: u64,
    /// `None` when the call read the clock. Otherwise the call returned after `ktime_ns` and
    /// at most this much later (the span between the readings around it).
    pub ktime_slack_ns: Option<u64>,
}

/// The slots of a raw-stream batch, in the order they were written.
#[derive(Debug, Clone)]
pub struct RawSlots<'a> {
    /// The CPU the batch was filled on.
    pub cpu: u32,
    /// The slots not read yet.
    rest: &'a [u8],
    /// The clock when the batch was sent.
    sent_ktime_ns: u64,
    /// The last reading of a call, and the calls without one since.
    last_reading: u64,
    unread_since: u64,
    /// The reading after the current run of calls without one, once looked up.
    next_reading: Option<u64>,
}

impl RawSlots<'_> {
    /// The clock reading of the first call not read yet that has one; the batch's send time
    /// when none has.
    fn reading_after(&self) -> u64 {
        let mut slots = self.rest;
        // SAFETY: as in `next`.
        while let Some(slot) = unsafe { read_record::<RawSlot>(slots) } {
            let len = if slot.nr == RAW_SLOT_THREAD {
                size_of::<RawThread>()
            } else if slot.ktime_ns != RAW_KTIME_UNREAD {
                return slot.ktime_ns;
            } else {
                size_of::<RawSlot>()
            };
            slots = slots.get(len..).unwrap_or_default();
        }
        self.sent_ktime_ns
    }

    /// Settles the time of the call slot just read.
    fn call(&mut self, slot: RawSlot) -> RawCall {
        let (ktime_ns, ktime_slack_ns) = if slot.ktime_ns != RAW_KTIME_UNREAD {
            self.last_reading = slot.ktime_ns;
            self.unread_since = 0;
            self.next_reading = None;
            (slot.ktime_ns, None)
        } else {
            self.unread_since += 1;
            let next = match self.next_reading {
                Some(next) => next,
                None => *self.next_reading.insert(self.reading_after()),
            };
            // The whole span, the same for the run: it compresses to almost nothing.
            let slack = next.saturating_sub(self.last_reading);
            (self.last_reading + self.unread_since, Some(slack))
        };
        RawCall {
            nr: slot.nr,
            tid: slot.tid,
            ret: slot.ret,
            ktime_ns,
            ktime_slack_ns,
        }
    }
}

impl Iterator for RawSlots<'_> {
    type Item = RawItem;

    fn next(&mut self) -> Option<RawItem> {
        // SAFETY: both slot types are plain old data; read_record checks the length (a thread
        // record cut short by the end of the batch ends the iteration).
        let slot: RawSlot = unsafe { read_record(self.rest) }?;
        if slot.nr == RAW_SLOT_THREAD {
            // SAFETY: plain old data from the ring; read_record checks the length.
            let thread: RawThread = unsafe { read_record(self.rest) }?;
            self.rest = &self.rest[size_of::<RawThread>()..];
            return Some(RawItem::Thread(thread));
        }
        self.rest = &self.rest[size_of::<RawSlot>()..];
        Some(RawItem::Call(self.call(slot)))
    }
}

fn raw_batch(bytes: &[u8]) -> Result<RawSlots<'_>, DecodeError> {
    let short = DecodeError::Short { len: bytes.len() };
    // SAFETY: plain old data; read_record checks the length.
    let header: RawBatchHeader = unsafe { read_record(bytes) }.ok_or(short)?;
    let end = RAW_BATCH_HEADER_LEN + header.len as usize * size_of::<RawSlot>();
    let rest = bytes.get(RAW_BATCH_HEADER_LEN..end).ok_or(short)?;
    Ok(RawSlots {
        cpu: header.cpu,
        rest,
        sent_ktime_ns: header.sent_ktime_ns,
        last_reading: header.first_ktime_ns,
        unread_since: 0,
        next_reading: None,
    })
}

/// Decodes one ring-buffer item.
pub fn decode<'a>(bytes: &'a [u8], clock: &WallClock) -> Result<Record<'a>, DecodeError> {
    let short = DecodeError::Short { len: bytes.len() };
    // SAFETY: every record starts with its u32 kind; read_record checks the length.
    if unsafe { read_record::<u32>(bytes) } == Some(KIND_RAW_BATCH) {
        return raw_batch(bytes).map(Record::RawBatch);
    }
    // SAFETY: every record type is plain old data; read_record checks the length.
    let header: EventHeader = unsafe { read_record(bytes) }.ok_or(short)?;
    match header.kind {
        KIND_FORK => {
            // SAFETY: plain old data from the ring; read_record checks the length.
            let ev: ForkEvent = unsafe { read_record(bytes) }.ok_or(short)?;
            let mut id = identity(&ev.header, clock);
            // The row is about the new process; the header described its parent.
            id.pid = ev.child_pid as i32;
            id.tid = ev.child_pid as i32;
            Ok(Record::Process(
                ProcessRow {
                    id,
                    ppid: Some(ev.header.pid as i32),
                    start_ns: Some(ev.child_start_ns),
                    parent_start_ns: Some(ev.parent_start_ns),
                    event: ProcessEvent::Fork,
                },
                Box::default(),
                ExeIdentity::default(),
            ))
        }
        KIND_EXEC => {
            // SAFETY: plain old data from the ring; read_record checks the length.
            let ev: ExecEvent = unsafe { read_record(bytes) }.ok_or(short)?;
            let filename_len = (ev.filename_len as usize).min(ev.filename.len());
            let argv_len = (ev.argv_len as usize).min(ev.argv.len());
            let (argv, argv_truncated) =
                split_argv(&ev.argv[..argv_len], ev.argv_total_len as usize);
            Ok(Record::Process(
                ProcessRow {
                    id: identity(&ev.header, clock),
                    ppid: Some(ev.ppid as i32),
                    start_ns: Some(ev.start_ns),
                    parent_start_ns: Some(ev.parent_start_ns),
                    event: ProcessEvent::Exec {
                        filename: String::from_utf8_lossy(&ev.filename[..filename_len])
                            .into_owned(),
                        argv,
                        argv_truncated,
                        uid: ev.uid,
                        gid: ev.gid,
                        euid: ev.euid,
                        egid: ev.egid,
                    },
                },
                {
                    let (kernel_path, how) = kernel_path(&ev.kpath);
                    Box::new(ProcessFacts {
                        mnt_ns: (ev.mnt_ns != 0).then_some(ev.mnt_ns),
                        kernel_path,
                        path_resolution: Some(how),
                        ..Default::default()
                    })
                },
                ExeIdentity {
                    dev: ev.exe_dev,
                    ino: ev.exe_ino,
                },
            ))
        }
        KIND_EXIT => {
            // SAFETY: plain old data from the ring; read_record checks the length.
            let ev: ExitEvent = unsafe { read_record(bytes) }.ok_or(short)?;
            let (exit_code, signal, core_dumped) = split_exit_code(ev.exit_code);
            Ok(Record::Process(
                ProcessRow {
                    id: identity(&ev.header, clock),
                    ppid: Some(ev.ppid as i32),
                    start_ns: Some(ev.start_ns),
                    parent_start_ns: Some(ev.parent_start_ns),
                    event: ProcessEvent::Exit {
                        exit_code,
                        signal,
                        core_dumped,
                    },
                },
                Box::default(),
                ExeIdentity::default(),
            ))
        }
        KIND_CALL | KIND_CALL_ENTRY => Ok(Record::Call(Box::new(
            // SAFETY: plain old data from the ring; read_record checks the length.
            unsafe { read_record(bytes) }.ok_or(short)?,
        ))),
        KIND_TCP_STATE => Ok(Record::TcpState(
            // SAFETY: plain old data from the ring; read_record checks the length.
            unsafe { read_record(bytes) }.ok_or(short)?,
        )),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Raw-stream batches as the kernel side writes them, for tests.
#[cfg(test)]
pub(crate) mod raw_batch_bytes {
    use quarry_recorder_common::{
        COMM_LEN, KIND_RAW_BATCH, RAW_BATCH_HEADER_LEN, RAW_KTIME_UNREAD, RAW_SLOT_THREAD,
        RAW_THREAD_SLOTS, RawBatchHeader, RawSlot, RawThread,
    };

    /// A thread record.
    pub fn thread(pid: u32, tid: u32, cgroup_id: u64, comm: &str) -> RawItemBytes {
        let mut c = [0u8; COMM_LEN];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        RawItemBytes::Thread(RawThread {
            marker: RAW_SLOT_THREAD,
            tid,
            pid,
            _pad: 0,
            cgroup_id,
            comm: c,
            _reserved: 0,
        })
    }

    /// A call slot.
    pub fn call(tid: u32, nr: i32, ktime_ns: u64, ret: i64) -> RawItemBytes {
        RawItemBytes::Call(RawSlot {
            nr,
            tid,
            ktime_ns,
            ret,
        })
    }

    pub enum RawItemBytes {
        Thread(RawThread),
        Call(RawSlot),
    }

    /// The ring-buffer record of a batch of these slots: header and filled slots only, sent
    /// right after its last clock reading.
    pub fn encode(items: &[RawItemBytes]) -> Vec<u8> {
        let readings = items.iter().filter_map(|i| match i {
            RawItemBytes::Call(c) if c.ktime_ns != RAW_KTIME_UNREAD => Some(c.ktime_ns),
            _ => None,
        });
        encode_sent_at(items, readings.max().unwrap_or(0))
    }

    /// [`encode`], for a batch sent at `sent_ktime_ns`.
    pub fn encode_sent_at(items: &[RawItemBytes], sent_ktime_ns: u64) -> Vec<u8> {
        fn bytes_of<T>(v: &T) -> &[u8] {
            // SAFETY: the records are plain old data.
            unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
        }
        let header = RawBatchHeader {
            kind: KIND_RAW_BATCH,
            len: items
                .iter()
                .map(|i| match i {
                    RawItemBytes::Thread(_) => RAW_THREAD_SLOTS as u32,
                    RawItemBytes::Call(_) => 1,
                })
                .sum(),
            calls: items
                .iter()
                .filter(|i| matches!(i, RawItemBytes::Call(_)))
                .count() as u32,
            first_ktime_ns: items
                .iter()
                .find_map(|i| match i {
                    RawItemBytes::Call(c) => Some(c.ktime_ns),
                    _ => None,
                })
                .unwrap_or(0),
            sent_ktime_ns,
            ..Default::default()
        };
        let mut out = bytes_of(&header).to_vec();
        assert_eq!(out.len(), RAW_BATCH_HEADER_LEN);
        for item in items {
            match item {
                RawItemBytes::Thread(t) => out.extend_from_slice(bytes_of(t)),
                RawItemBytes::Call(c) => out.extend_from_slice(bytes_of(c)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_recorder_common::{ARGV_LEN, COMM_LEN, FILENAME_LEN};

    #[test]
    fn raw_batch_slots_in_order() {
        use super::raw_batch_bytes::{call, encode, thread};
        let bytes = encode(&[
            thread(10, 11, 7, "sh"),
            call(11, 39, 1_000, 10),
            call(11, 0, 2_000, -9),
        ]);
        let Ok(Record::RawBatch(slots)) = decode(&bytes, &WallClock::with_offset_ns(0)) else {
            panic!("a raw batch");
        };
        let items: Vec<RawItem> = slots.collect();
        assert_eq!(items.len(), 3);
        let RawItem::Thread(t) = items[0] else {
            panic!("thread record first")
        };
        assert_eq!(
            (t.pid, t.tid, t.cgroup_id, &t.comm[..3]),
            (10, 11, 7, &b"sh\0"[..])
        );
        assert_eq!(
            items[2],
            RawItem::Call(RawCall {
                nr: 0,
                tid: 11,
                ret: -9,
                ktime_ns: 2_000,
                ktime_slack_ns: None,
            })
        );
        // A record shorter than the slots its header announces is refused whole.
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], &WallClock::with_offset_ns(0)),
            Err(DecodeError::Short { .. })
        ));
    }

    /// Calls that did not read the clock sit just after the reading before them, in order,
    /// with the span to the reading after them (or to the batch's send time) as slack.
    #[test]
    fn raw_calls_without_a_reading_are_bounded_by_the_readings_around_them() {
        use super::raw_batch_bytes::{call, encode_sent_at, thread};
        let unread = RAW_KTIME_UNREAD;
        let bytes = encode_sent_at(
            &[
                thread(10, 11, 7, "sh"),
                call(11, 39, 1_000, 0),
                call(11, 39, unread, 0),
                call(11, 39, unread, 0),
                // A thread change reads the clock; the thread record is skipped when
                // looking for the next reading.
                thread(20, 21, 8, "nginx"),
                call(21, 0, 5_000, 0),
                call(21, 0, unread, 0),
            ],
            9_000,
        );
        let Ok(Record::RawBatch(slots)) = decode(&bytes, &WallClock::with_offset_ns(0)) else {
            panic!("a raw batch");
        };
        let times: Vec<(u64, Option<u64>)> = slots
            .filter_map(|item| match item {
                RawItem::Call(c) => Some((c.ktime_ns, c.ktime_slack_ns)),
                RawItem::Thread(_) => None,
            })
            .collect();
        assert_eq!(
            times,
            [
                (1_000, None),
                (1_001, Some(4_000)),
                (1_002, Some(4_000)),
                (5_000, None),
                (5_001, Some(4_000)),
            ]
        );
    }

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"bash");
        EventHeader {
            kind,
            pid: 100,
            tid: 101,
            _pad: 0,
            ktime_ns: 2_000,
            cgroup_id: 7,
            comm,
        }
    }

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: test records are plain old data.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(split_exit_code(0), (Some(0), None, false));
        assert_eq!(split_exit_code(3 << 8), (Some(3), None, false));
        assert_eq!(split_exit_code(9), (None, Some(9), false));
        assert_eq!(split_exit_code(11 | 0x80), (None, Some(11), true));
    }

    #[test]
    fn argv_splitting() {
        assert_eq!(
            split_argv(b"ls\0-l\0/tmp\0", 11),
            (vec!["ls".into(), "-l".into(), "/tmp".into()], false)
        );
        assert_eq!(
            split_argv(b"ls\0-l\0/t", 11),
            (vec!["ls".into(), "-l".into(), "/t".into()], true)
        );
        assert_eq!(split_argv(b"", 0), (vec![], false));
        // An empty argument in the middle is kept.
        assert_eq!(split_argv(b"a\0\0b\0", 5).0, vec!["a", "", "b"]);
    }

    #[test]
    fn fork_row_is_about_the_child() {
        let ev = ForkEvent {
            header: header(KIND_FORK),
            child_pid: 555,
            _pad: 0,
            parent_start_ns: 10,
            child_start_ns: 20,
        };
        let Ok(Record::Process(row, _, _)) = decode(bytes_of(&ev), &WallClock::with_offset_ns(0))
        else {
            panic!("not a process record");
        };
        assert_eq!((row.id.pid, row.id.tid, row.ppid), (555, 555, Some(100)));
        assert_eq!((row.start_ns, row.parent_start_ns), (Some(20), Some(10)));
        assert_eq!(row.id.comm, "bash");
        assert_eq!(row.event, ProcessEvent::Fork);
    }

    #[test]
    fn exec_row() {
        let mut ev = ExecEvent {
            header: header(KIND_EXEC),
            ppid: 1,
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 0,
            filename_len: 7,
            argv_total_len: 9,
            argv_len: 9,
            mnt_ns: 4026531841,
            exe_dev: 8 << 20 | 1,
            start_ns: 5,
            parent_start_ns: 1,
            exe_ino: 1234,
            filename: [0; FILENAME_LEN],
            argv: [0; ARGV_LEN],
            kpath: walked(KPATH_ROOT, b"busybox\0bin\0"),
        };
        ev.filename[..7].copy_from_slice(b"/bin/ls");
        ev.argv[..9].copy_from_slice(b"ls\0-la\0x\0");
        let Ok(Record::Process(row, facts, exe)) =
            decode(bytes_of(&ev), &WallClock::with_offset_ns(0))
        else {
            panic!("not a process record");
        };
        let ProcessEvent::Exec {
            filename,
            argv,
            argv_truncated,
            uid,
            euid,
            ..
        } = row.event
        else {
            panic!("not an exec");
        };
        assert_eq!(filename, "/bin/ls");
        assert_eq!(argv, vec!["ls", "-la", "x"]);
        assert!(!argv_truncated);
        assert_eq!((uid, euid), (1000, 0));
        // The symlink /bin/ls is what was asked for; the kernel executed /bin/busybox.
        assert_eq!(facts.kernel_path.as_deref(), Some("/bin/busybox"));
        assert_eq!(facts.path_resolution, Some("kernel"));
        assert_eq!((exe.dev, exe.ino), (8 << 20 | 1, 1234));
    }

    fn walked(status: u32, leaf_first: &[u8]) -> KernelPath {
        let mut k = KernelPath {
            status,
            len: leaf_first.len() as u32,
            buf: [0; quarry_recorder_common::KPATH_LEN],
        };
        k.buf[..leaf_first.len()].copy_from_slice(leaf_first);
        k
    }

    #[test]
    fn kernel_paths() {
        use quarry_recorder_common::KPATH_TRUNCATED;
        let cases: [(u32, &[u8], Option<&str>, &str); 7] = [
            (KPATH_ROOT, b"shadow\0etc\0", Some("/etc/shadow"), "kernel"),
            (KPATH_ROOT, b"", Some("/"), "kernel"),
            (
                KPATH_OUTSIDE_ROOT,
                b"shadow\0etc\0",
                Some("/etc/shadow"),
                "kernel_outside_root",
            ),
            // A walk that gave up keeps the last components, never a leading '/'.
            (KPATH_TRUNCATED, b"c\0b\0", Some("b/c"), "truncated"),
            (KPATH_ROOT, b"\xff\0tmp\0", Some("/tmp/\u{fffd}"), "kernel"),
            (KPATH_NONE, b"junk\0", None, "lexical"),
            (KPATH_PSEUDO, b"", None, "pseudo"),
        ];
        for (status, bytes, path, how) in cases {
            let (p, h) = kernel_path(&walked(status, bytes));
            assert_eq!((p.as_deref(), h), (path, how), "{bytes:?}");
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(
            decode(&[1, 0, 0], &WallClock::with_offset_ns(0)),
            Err(DecodeError::Short { len: 3 })
        ));
        let h = header(99);
        assert!(matches!(
            decode(bytes_of(&h), &WallClock::with_offset_ns(0)),
            Err(DecodeError::UnknownKind(99))
        ));
        let h = header(KIND_EXEC);
        assert!(matches!(
            decode(bytes_of(&h), &WallClock::with_offset_ns(0)),
            Err(DecodeError::Short { .. })
        ));
    }
}
