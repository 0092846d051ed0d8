//! The inode table: FUSE node ids, the names they are reachable by, and the
//! lookup counts the kernel holds on them.
//!
//! No file descriptor is kept per inode: a node knows its (parent, name)
//! links, so its path relative to the layer roots is rebuilt on demand and
//! reopened beneath the layer root fd. A node is dropped once the kernel has
//! forgotten it and no remembered child still names it as parent, so memory
//! follows the kernel's dentry cache, not the size of the tree.
//!
//! Node ids double as the presented `st_ino`: `(device index << 48) | host
//! inode`, with a per-device index handed out on first sight, which makes them
//! stable for the life of the mount without remembering every file. Host
//! inodes that do not fit in 48 bits get a remembered number from a separate
//! range, and so do directories reached by a second path (bind mounts), which
//! the kernel does not accept as one directory inode.

use std::collections::HashMap;

use crate::rootfs::upper::Override;

/// The FUSE root node id.
pub(crate) const ROOT: u64 = 1;

const DEV_SHIFT: u32 = 48;
const INO_MASK: u64 = (1 << DEV_SHIFT) - 1;
const MAX_DEV_INDEX: u64 = 0xFFFD;
/// Range for numbers that are not derived from a host inode.
const FALLBACK_BASE: u64 = 0xFFFE << DEV_SHIFT;

/// What a node shows besides its layer files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// An ordinary overlay entry.
    Normal,
    /// A masked path shown as an empty read-only directory.
    Empty,
}

/// One (parent, name) under which a node is reachable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Link {
    pub parent: u64,
    pub name: Box<[u8]>,
}

/// Where a node's content lives right now.
#[derive(Clone, Debug)]
pub(crate) struct NodeState {
    /// `S_IFMT` bits.
    pub kind: u32,
    /// An entry exists in the upper layer at the node's path.
    pub upper: bool,
    /// A directory whose lower counterpart (same path) is merged in.
    pub lower_dir: bool,
    pub special: Special,
    /// Cached override xattr of the upper file.
    pub ovr: Option<Override>,
}

#[derive(Debug)]
struct Node {
    links: Vec<Link>,
    lookups: u64,
    children: u64,
    state: NodeState,
}

/// A snapshot of a node for an operation.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    pub ino: u64,
    /// Path relative to the layer roots ("" for the root).
    pub path: Vec<u8>,
    pub state: NodeState,
}

/// The inode table (always used behind a mutex).
#[derive(Debug)]
pub(crate) struct Table {
    nodes: HashMap<u64, Node>,
    by_link: HashMap<Link, u64>,
    devs: HashMap<u64, u64>,
    big: HashMap<(u64, u64), u64>,
    next_fallback: u64,
}

impl Table {
    pub(crate) fn new(root: NodeState) -> Table {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                links: Vec::new(),
                lookups: 1,
                children: 0,
                state: root,
            },
        );
        Table {
            nodes,
            by_link: HashMap::new(),
            devs: HashMap::new(),
            big: HashMap::new(),
            next_fallback: FALLBACK_BASE,
        }
    }

    /// Number of nodes (for tests and statistics).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A number never handed out before.
    pub(crate) fn fresh_number(&mut self) -> u64 {
        self.next_fallback += 1;
        self.next_fallback
    }

    /// The stable number of a host (st_dev, st_ino).
    pub(crate) fn number_for(&mut self, dev: u64, ino: u64) -> u64 {
        let next = self.devs.len() as u64 + 1;
        let idx = *self.devs.entry(dev).or_insert(next);
        if ino <= INO_MASK && idx <= MAX_DEV_INDEX {
            return (idx << DEV_SHIFT) | ino;
        }
        if let Some(n) = self.big.get(&(dev, ino)) {
            return *n;
        }
        let n = self.fresh_number();
        self.big.insert((dev, ino), n);
        n
    }

    /// The number a directory listing shows for a child, when known.
    pub(crate) fn child_number(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let link = Link {
            parent,
            name: name.into(),
        };
        self.by_link.get(&link).copied()
    }

    pub(crate) fn state(&self, ino: u64) -> Option<&NodeState> {
        self.nodes.get(&ino).map(|n| &n.state)
    }

    pub(crate) fn state_mut(&mut self, ino: u64) -> Option<&mut NodeState> {
        self.nodes.get_mut(&ino).map(|n| &mut n.state)
    }

    /// The path of a node (None when it has no name left, e.g. unlinked).
    pub(crate) fn path(&self, ino: u64) -> Option<Vec<u8>> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        let mut guard = 0;
        while cur != ROOT {
            let n = self.nodes.get(&cur)?;
            let l = n.links.first()?;
            parts.push(&l.name);
            cur = l.parent;
            guard += 1;
            if guard > 4096 {
                return None;
            }
        }
        let mut p = Vec::new();
        for (i, part) in parts.iter().rev().enumerate() {
            if i > 0 {
                p.push(b'/');
            }
            p.extend_from_slice(part);
        }
        Some(p)
    }

    /// The parent of a node through its first link.
    pub(crate) fn parent_of(&self, ino: u64) -> Option<u64> {
        self.nodes.get(&ino)?.links.first().map(|l| l.parent)
    }

    pub(crate) fn info(&self, ino: u64) -> Option<NodeInfo> {
        let n = self.nodes.get(&ino)?;
        Some(NodeInfo {
            ino,
            path: self.path(ino)?,
            state: n.state.clone(),
        })
    }

    /// Whether `anc` is `ino` or one of its ancestors (through first links).
    pub(crate) fn is_ancestor(&self, anc: u64, ino: u64) -> bool {
        let mut cur = ino;
        let mut guard = 0;
        loop {
            if cur == anc {
                return true;
            }
            if cur == ROOT || guard > 4096 {
                return false;
            }
            match self.nodes.get(&cur).and_then(|n| n.links.first()) {
                Some(l) => cur = l.parent,
                None => return false,
            }
            guard += 1;
        }
    }

    fn add_link(&mut self, ino: u64, link: Link) {
        if self.by_link.get(&link) == Some(&ino) {
            return;
        }
        // A name can only refer to one node: drop a stale holder first.
        if self.by_link.contains_key(&link) {
            self.remove_link(&link);
        }
        if let Some(p) = self.nodes.get_mut(&link.parent) {
            p.children += 1;
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.links.push(link.clone());
        }
        self.by_link.insert(link, ino);
    }

    /// Records a successful lookup of `name` in `parent` resolving to a node
    /// numbered `number` with `state`; returns the node id given to the kernel.
    pub(crate) fn lookup_ref(
        &mut self,
        parent: u64,
        name: &[u8],
        number: u64,
        state: NodeState,
    ) -> u64 {
        let link = Link {
            parent,
            name: name.into(),
        };
        let mut number = number;
        if let Some(n) = self.nodes.get(&number) {
            let same_name = n.links.contains(&link);
            let is_dir = state.kind == libc::S_IFDIR || n.state.kind == libc::S_IFDIR;
            let kind_differs = n.state.kind != state.kind;
            if !same_name && (kind_differs || (is_dir && !n.links.is_empty())) {
                // A directory seen under a second path, or a reused number:
                // give it its own node.
                number = match self.by_link.get(&link) {
                    Some(&other)
                        if self
                            .nodes
                            .get(&other)
                            .map(|o| o.state.kind == state.kind)
                            .unwrap_or(false) =>
                    {
                        other
                    }
                    _ => self.fresh_number(),
                };
            }
        }
        match self.nodes.get_mut(&number) {
            Some(n) => {
                n.lookups += 1;
                if n.state.special == Special::Normal {
                    n.state = state;
                }
            }
            None => {
                self.nodes.insert(
                    number,
                    Node {
                        links: Vec::new(),
                        lookups: 1,
                        children: 0,
                        state,
                    },
                );
            }
        }
        self.add_link(number, link);
        number
    }

    /// Drops `count` kernel references; true when the node is gone.
    pub(crate) fn forget(&mut self, ino: u64, count: u64) -> bool {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(count);
        }
        self.try_remove(ino);
        !self.nodes.contains_key(&ino)
    }

    /// The kernel's references on a node and how many names it has.
    pub(crate) fn refs(&self, ino: u64) -> Option<(u64, usize)> {
        self.nodes.get(&ino).map(|n| (n.lookups, n.links.len()))
    }

    fn try_remove(&mut self, ino: u64) {
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            if ino == ROOT {
                continue;
            }
            let removable =
                matches!(self.nodes.get(&ino), Some(n) if n.lookups == 0 && n.children == 0);
            if !removable {
                continue;
            }
            if let Some(n) = self.nodes.remove(&ino) {
                for l in n.links {
                    self.by_link.remove(&l);
                    if let Some(p) = self.nodes.get_mut(&l.parent) {
                        p.children = p.children.saturating_sub(1);
                    }
                    stack.push(l.parent);
                }
            }
        }
    }

    fn remove_link(&mut self, link: &Link) -> Option<u64> {
        let ino = self.by_link.remove(link)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.links.retain(|l| l != link);
        }
        if let Some(p) = self.nodes.get_mut(&link.parent) {
            p.children = p.children.saturating_sub(1);
        }
        self.try_remove(link.parent);
        self.try_remove(ino);
        Some(ino)
    }

    /// A name went away.
    pub(crate) fn unlink(&mut self, parent: u64, name: &[u8]) {
        let link = Link {
            parent,
            name: name.into(),
        };
        self.remove_link(&link);
    }

    /// `old` was renamed to `new` (replacing whatever `new` was).
    pub(crate) fn rename(&mut self, op: u64, oname: &[u8], np: u64, nname: &[u8]) {
        let old = Link {
            parent: op,
            name: oname.into(),
        };
        let new = Link {
            parent: np,
            name: nname.into(),
        };
        let moved = self.by_link.get(&old).copied();
        if let Some(target) = self.by_link.get(&new).copied() {
            if Some(target) == moved {
                // Two names of one inode: rename(2) does nothing.
                return;
            }
            self.remove_link(&new);
        }
        let Some(ino) = moved else { return };
        // Keep the parents pinned while moving the link.
        if let Some(p) = self.nodes.get_mut(&np) {
            p.children += 1;
        }
        self.by_link.remove(&old);
        self.by_link.insert(new.clone(), ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            for l in n.links.iter_mut() {
                if *l == old {
                    *l = new.clone();
                }
            }
            // Make the renamed name the primary one.
            if let Some(pos) = n.links.iter().position(|l| *l == new) {
                n.links.swap(0, pos);
            }
        }
        if let Some(p) = self.nodes.get_mut(&op) {
            p.children = p.children.saturating_sub(1);
        }
        self.try_remove(op);
    }

    /// Two names swapped their nodes.
    pub(crate) fn exchange(&mut self, op: u64, oname: &[u8], np: u64, nname: &[u8]) {
        let a = Link {
            parent: op,
            name: oname.into(),
        };
        let b = Link {
            parent: np,
            name: nname.into(),
        };
        let ia = self.by_link.remove(&a);
        let ib = self.by_link.remove(&b);
        for (ino, from, to) in [(ia, &a, &b), (ib, &b, &a)] {
            if let Some(ino) = ino {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    for l in n.links.iter_mut() {
                        if l == from {
                            *l = to.clone();
                        }
                    }
                }
                self.by_link.insert(to.clone(), ino);
            }
        }
        // Parent child counts: each parent keeps one link (a's moved to b's
        // parent and vice versa), so adjust when only one side existed.
        match (ia, ib) {
            (Some(_), None) => {
                if let Some(p) = self.nodes.get_mut(&np) {
                    p.children += 1;
                }
                if let Some(p) = self.nodes.get_mut(&op) {
                    p.children = p.children.saturating_sub(1);
                }
                self.try_remove(op);
            }
            (None, Some(_)) => {
                if let Some(p) = self.nodes.get_mut(&op) {
                    p.children += 1;
                }
                if let Some(p) = self.nodes.get_mut(&np) {
                    p.children = p.children.saturating_sub(1);
                }
                self.try_remove(np);
            }
            _ => {}
        }
    }

    /// After a directory was fully copied up (and made opaque): every
    /// remembered node below it now lives in the upper layer only.
    pub(crate) fn mark_subtree_upper(&mut self, dir: u64) {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            if ino != dir && self.is_ancestor(dir, ino) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    if n.state.special == Special::Normal {
                        n.state.upper = true;
                        n.state.lower_dir = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(kind: u32) -> NodeState {
        NodeState {
            kind,
            upper: false,
            lower_dir: kind == libc::S_IFDIR,
            special: Special::Normal,
            ovr: None,
        }
    }

    #[test]
    fn numbers_are_stable_and_distinct() {
        let mut t = Table::new(st(libc::S_IFDIR));
        let a = t.number_for(10, 5);
        let b = t.number_for(11, 5);
        assert_ne!(a, b);
        assert_eq!(a, t.number_for(10, 5));
        let big = t.number_for(10, u64::MAX);
        assert_eq!(big, t.number_for(10, u64::MAX));
        assert!(big >= FALLBACK_BASE);
    }

    #[test]
    fn paths_follow_renames_and_forget_frees() {
        let mut t = Table::new(st(libc::S_IFDIR));
        let d = t.lookup_ref(ROOT, b"d", 100, st(libc::S_IFDIR));
        let f = t.lookup_ref(d, b"f", 200, st(libc::S_IFREG));
        assert_eq!(t.path(f).unwrap(), b"d/f".to_vec());
        t.rename(ROOT, b"d", ROOT, b"e");
        assert_eq!(t.path(f).unwrap(), b"e/f".to_vec());
        // The directory is pinned by its child.
        t.forget(d, 1);
        assert_eq!(t.len(), 3);
        t.forget(f, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn hard_links_and_unlink() {
        let mut t = Table::new(st(libc::S_IFDIR));
        let a = t.lookup_ref(ROOT, b"a", 300, st(libc::S_IFREG));
        let b = t.lookup_ref(ROOT, b"b", 300, st(libc::S_IFREG));
        assert_eq!(a, b);
        t.unlink(ROOT, b"a");
        assert_eq!(t.path(a).unwrap(), b"b".to_vec());
        t.unlink(ROOT, b"b");
        assert!(t.path(a).is_none());
        t.forget(a, 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn dir_alias_gets_own_node() {
        let mut t = Table::new(st(libc::S_IFDIR));
        let a = t.lookup_ref(ROOT, b"a", 400, st(libc::S_IFDIR));
        let b = t.lookup_ref(ROOT, b"b", 400, st(libc::S_IFDIR));
        assert_ne!(a, b);
        assert_eq!(t.path(b).unwrap(), b"b".to_vec());
    }
}
