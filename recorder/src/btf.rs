//! Finds kernel structure field offsets in the running kernel's BTF.
//!
//! The eBPF programs read `task_struct`, `mm_struct`, `cred`, `linux_binprm`, `nsproxy` and
//! `mnt_namespace` fields, and for the kernel path walk `files_struct`, `fdtable`, `file`,
//! `path`, `dentry`, `vfsmount`, `mount` and `fs_struct` fields, at byte offsets handed to them before load ([`KernelOffsets`]),
//! which keeps one object portable across kernels the way CO-RE does. Only the part of the BTF format needed to walk struct
//! members is parsed here (see the kernel's Documentation/bpf/btf.rst).

use std::collections::HashMap;

use quarry_recorder_common::KernelOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// A kind this parser does not know, so the type section cannot be walked further.
    #[error("unsupported BTF kind {kind} at type {id}")]
    UnknownKind { kind: u32, id: u32 },
    /// The kernel has no such struct, or the struct no such field.
    #[error("kernel BTF has no field {0}")]
    MissingField(String),
    /// The field is a bitfield, which the programs cannot read by byte offset.
    #[error("kernel field {0} is not byte-aligned")]
    Unaligned(String),
}

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// For modifiers and typedefs: the type they refer to.
    ref_type: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: its types by id and its string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("slice of 4")))
        .ok_or_else(|| BtfError::Malformed(format!("cut short at byte {off}")))
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic".into()));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_data = data
            .get(types_start..types_start + type_len)
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();

        // Type ids start at 1; slot 0 is "void".
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            ref_type: 0,
            members: Vec::new(),
        }];
        let mut pos = 0;
        while pos < types_data.len() {
            let id = types.len() as u32;
            let name_off = u32_at(types_data, pos)?;
            let info = u32_at(types_data, pos + 4)?;
            let size_or_type = u32_at(types_data, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => pos += 4,
                KIND_ARRAY => pos += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(types_data, pos + 8)?;
                        members.push(Member {
                            name_off: u32_at(types_data, pos)?,
                            type_id: u32_at(types_data, pos + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                        pos += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => pos += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => pos += 12 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => {}
                other => return Err(BtfError::UnknownKind { kind: other, id }),
            }
            types.push(Type {
                name_off,
                kind,
                ref_type: size_or_type,
                members,
            });
        }

        let mut btf = Btf {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && !t.members.is_empty() {
                let name = btf.name(t.name_off).to_string();
                if !name.is_empty() {
                    btf.structs_by_name.entry(name).or_insert(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].ref_type
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `field` in the struct or union `id`, looking inside anonymous members.
    fn find_member(&self, id: u32, field: &str) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name_off == 0 || self.name(m.name_off).is_empty() {
                let inner = self.resolve(m.type_id);
                if let Some(off) = self.find_member(inner, field) {
                    return Some(m.bit_offset + off);
                }
            } else if self.name(m.name_off) == field {
                return Some(m.bit_offset);
            }
        }
        None
    }

    /// Byte offset of `path` (`"struct.field"` or `"struct.field.subfield"`).
    pub fn offset_of(&self, path: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::MissingField(path.to_string());
        let mut parts = path.split('.');
        let struct_name = parts.next().ok_or_else(missing)?;
        let mut id = *self.structs_by_name.get(struct_name).ok_or_else(missing)?;
        let mut bits = 0;
        for field in parts {
            let off = self.find_member(id, field).ok_or_else(missing)?;
            bits += off;
            let member_type = self.member_type(id, field).ok_or_else(missing)?;
            id = self.resolve(member_type);
        }
        if bits % 8 != 0 {
            return Err(BtfError::Unaligned(path.to_string()));
        }
        Ok(bits / 8)
    }

    fn member_type(&self, id: u32, field: &str) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name_off == 0 || self.name(m.name_off).is_empty() {
                if let Some(ty) = self.member_type(self.resolve(m.type_id), field) {
                    return Some(ty);
                }
            } else if self.name(m.name_off) == field {
                return Some(m.type_id);
            }
        }
        None
    }

    /// The offsets the recorder's programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_pid: self.offset_of("task_struct.pid")?,
            task_tgid: self.offset_of("task_struct.tgid")?,
            task_start_time: self.offset_of("task_struct.start_time")?,
            task_real_parent: self.offset_of("task_struct.real_parent")?,
            task_group_leader: self.offset_of("task_struct.group_leader")?,
            task_mm: self.offset_of("task_struct.mm")?,
            task_real_cred: self.offset_of("task_struct.real_cred")?,
            task_exit_code: self.offset_of("task_struct.exit_code")?,
            task_signal: self.offset_of("task_struct.signal")?,
            signal_live: self.offset_of("signal_struct.live")?,
            mm_arg_start: self.offset_of("mm_struct.arg_start")?,
            mm_arg_end: self.offset_of("mm_struct.arg_end")?,
            cred_uid: self.offset_of("cred.uid.val")?,
            cred_gid: self.offset_of("cred.gid.val")?,
            cred_euid: self.offset_of("cred.euid.val")?,
            cred_egid: self.offset_of("cred.egid.val")?,
            bprm_filename: self.offset_of("linux_binprm.filename")?,
            task_nsproxy: self.offset_of("task_struct.nsproxy")?,
            nsproxy_mnt_ns: self.offset_of("nsproxy.mnt_ns")?,
            mnt_ns_inum: self.offset_of("mnt_namespace.ns.inum")?,
            ..KernelOffsets::default()
        })
    }

    /// Adds the offsets of the kernel path walk (file -> dentry and mount chain -> the task's
    /// root) to `offsets` and turns the walk on, or leaves it off and says which field this
    /// kernel lacks: then every path is recorded as lexical, the recording goes on.
    pub fn path_walk_offsets(&self, offsets: &mut KernelOffsets) -> Result<(), BtfError> {
        let mut o = *offsets;
        o.task_files = self.offset_of("task_struct.files")?;
        o.files_fdt = self.offset_of("files_struct.fdt")?;
        o.fdt_max_fds = self.offset_of("fdtable.max_fds")?;
        o.fdt_fd = self.offset_of("fdtable.fd")?;
        o.file_f_path = self.offset_of("file.f_path")?;
        o.path_dentry = self.offset_of("path.dentry")?;
        o.path_mnt = self.offset_of("path.mnt")?;
        o.dentry_d_parent = self.offset_of("dentry.d_parent")?;
        o.dentry_name = self.offset_of("dentry.d_name.name")?;
        o.vfsmount_mnt_root = self.offset_of("vfsmount.mnt_root")?;
        o.mount_mnt = self.offset_of("mount.mnt")?;
        o.mount_mnt_parent = self.offset_of("mount.mnt_parent")?;
        o.mount_mnt_mountpoint = self.offset_of("mount.mnt_mountpoint")?;
        o.task_fs = self.offset_of("task_struct.fs")?;
        o.fs_root = self.offset_of("fs_struct.root")?;
        o.bprm_file = self.offset_of("linux_binprm.file")?;
        o.file_f_inode = self.offset_of("file.f_inode")?;
        o.inode_i_ino = self.offset_of("inode.i_ino")?;
        o.inode_i_sb = self.offset_of("inode.i_sb")?;
        o.sb_s_dev = self.offset_of("super_block.s_dev")?;
        o.path_walk = 1;
        *offsets = o;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob by hand: `struct outer { int a; union { long b; struct inner c; }; }`
    /// with `struct inner { int x; int y; }` — enough to exercise anonymous members and paths.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0inner\0x\0y\0long\0".to_vec();
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // 1: int (4 bytes)
        push(&[s("int"), info(KIND_INT, 0), 4, 32]);
        // 2: long (8 bytes)
        push(&[s("long"), info(KIND_INT, 0), 8, 64]);
        // 3: struct inner { int x @0; int y @32 }
        push(&[s("inner"), info(KIND_STRUCT, 2), 8]);
        push(&[s("x"), 1, 0, s("y"), 1, 32]);
        // 4: anonymous union { long b @0; struct inner c @0 }
        push(&[0, info(KIND_UNION, 2), 8]);
        push(&[s("b"), 2, 0, s("c"), 3, 0]);
        // 5: struct outer { int a @0; <anon union> @64 }
        push(&[s("outer"), info(KIND_STRUCT, 2), 16]);
        push(&[s("a"), 1, 0, 0, 4, 64]);

        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&t);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_fields_through_anonymous_members_and_paths() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("outer.a").unwrap(), 0);
        assert_eq!(btf.offset_of("outer.b").unwrap(), 8);
        assert_eq!(btf.offset_of("outer.c.y").unwrap(), 12);
        assert_eq!(btf.offset_of("inner.y").unwrap(), 4);
        assert!(matches!(
            btf.offset_of("outer.nope"),
            Err(BtfError::MissingField(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly not").is_err());
    }

    #[test]
    fn running_kernel_has_every_offset() {
        // Reads only public kernel metadata; skipped where the kernel publishes no BTF.
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            eprintln!("no {VMLINUX_BTF}; skipping");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let mut o = btf.kernel_offsets().unwrap();
        assert_ne!(o.task_tgid, o.task_pid);
        assert!(o.mm_arg_end > o.mm_arg_start);
        assert_eq!(o.path_walk, 0);
        btf.path_walk_offsets(&mut o).unwrap();
        assert_eq!(o.path_walk, 1);
        // struct path is { vfsmount *mnt; dentry *dentry; } on every kernel with BTF.
        assert_eq!((o.path_mnt, o.path_dentry), (0, 8));
        assert!(o.mount_mnt_mountpoint > o.mount_mnt_parent);
    }
}
