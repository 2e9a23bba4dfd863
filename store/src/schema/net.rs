//! The `net` table: sockets, binds, connects, listens, accepts and TCP state changes.

use super::*;

/// Schema of the `net` table.
pub static NET_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = common_fields();
    fields.extend([
        // connect | accept | bind | listen | socket | tcp_state
        Field::new("event", DataType::Utf8, false),
        Field::new("syscall", DataType::Utf8, true),
        Field::new("fd", DataType::Int32, true),
        // inet | inet6 | unix | netlink | packet | other(<n>)
        Field::new("family", DataType::Utf8, true),
        // tcp_state rows: tcp | sctp | mptcp; socket rows: the socket type asked for
        // (stream | dgram | raw | seqpacket | packet | other).
        Field::new("protocol", DataType::Utf8, true),
        Field::new("local_addr", DataType::Utf8, true),
        Field::new("local_port", DataType::UInt16, true),
        Field::new("remote_addr", DataType::Utf8, true),
        Field::new("remote_port", DataType::UInt16, true),
        Field::new("unix_path", DataType::Utf8, true),
        // tcp_state: the transition (e.g. SYN_SENT -> ESTABLISHED). The pid/comm of these rows
        // is whatever task the kernel ran when the state changed, often not the socket's owner.
        Field::new("old_state", DataType::Utf8, true),
        Field::new("new_state", DataType::Utf8, true),
        // listen: the backlog asked for.
        Field::new("backlog", DataType::Int32, true),
        // The syscall's result (accept: the new fd); negative errno on failure.
        Field::new("ret", DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// The kernel's TCP state names (include/net/tcp_states.h), by number, as the `net` table's
/// `old_state`/`new_state` columns spell them. None for a number the kernel does not use.
pub fn tcp_state_name(state: usize) -> Option<&'static str> {
    const STATES: [&str; 13] = [
        "UNKNOWN",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    STATES.get(state).copied().filter(|_| state != 0)
}

/// One row of the `net` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetRow {
    pub id: Option<RowIdentity>,
    pub event: &'static str,
    pub syscall: Option<&'static str>,
    pub fd: Option<i32>,
    pub family: Option<String>,
    pub protocol: Option<&'static str>,
    pub local_addr: Option<String>,
    pub local_port: Option<u16>,
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub unix_path: Option<String>,
    pub old_state: Option<&'static str>,
    pub new_state: Option<&'static str>,
    pub backlog: Option<i32>,
    pub ret: Option<i64>,
}

/// Builds a `net` batch. Every row must have its identity set.
pub fn net_batch(host: &str, rows: &[NetRow]) -> RecordBatch {
    let mut columns = common_columns(host, rows, |r| {
        r.id.as_ref().expect("net rows carry an identity")
    });
    let ports = |f: fn(&NetRow) -> Option<u16>| -> ArrayRef {
        let mut b = arrow::array::UInt16Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let local_port = ports(|r| r.local_port);
    let remote_port = ports(|r| r.remote_port);
    columns.extend([
        col_str(rows, |r| Some(r.event)),
        col_str(rows, |r| r.syscall),
        col_i32(rows, |r| r.fd),
        col_str(rows, |r| r.family.as_deref()),
        col_str(rows, |r| r.protocol),
        col_str(rows, |r| r.local_addr.as_deref()),
        local_port,
        col_str(rows, |r| r.remote_addr.as_deref()),
        remote_port,
        col_str(rows, |r| r.unix_path.as_deref()),
        col_str(rows, |r| r.old_state),
        col_str(rows, |r| r.new_state),
        col_i32(rows, |r| r.backlog),
        col_i64(rows, |r| r.ret),
    ]);
    batch(&NET_SCHEMA, columns)
}
