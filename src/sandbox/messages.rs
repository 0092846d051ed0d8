//! The conversations over the sandbox's channels, one message type each
//! way. The variant names are the wire tags (`sbox exec` may talk to a
//! sandbox started by an earlier sbox): keep them.

use super::channel::conversation;

conversation! {
    /// launcher → init, on the channel of their socket pair.
    pub enum ToInit ("the launcher's messages to init") {
        /// The id maps are written; go on.
        MapsWritten,
    }
}

conversation! {
    /// init → launcher, on the channel of their socket pair: the FUSE
    /// mounts to serve, in the order init mounts them, then `Ready` (or
    /// `Refused` alone when the command could not start), then `Refused`
    /// as the sandbox ends.
    pub enum FromInit ("init's messages to the launcher") {
        /// The /dev/fuse descriptor of the mounted root is attached; serve
        /// it.
        FuseFd,
        /// The /dev/fuse descriptor of the passthrough mount of plan step
        /// `step` (a `Step::FuseBind`) is attached; serve it.
        FuseBindFd { step: usize },
        /// The sandbox's /proc (an `O_PATH` directory) is attached, for the
        /// FUSE servers (the groups of a process changing a set-id file);
        /// sent right after `Ready` when `plan::hands_over_procfs`.
        ProcFs,
        /// A socket of the sandbox's network namespace for sbox's DNS
        /// (`dns`), its watch on connection requests (`watch`) or its
        /// forwarder is attached; serve it.
        EgressSocket { dns: bool, watch: bool },
        /// The root is assembled and the command started; a pty master is
        /// attached when the sandbox has a terminal.
        Ready { pty: bool },
        /// As the sandbox ends: how many operations init saw refused
        /// (seccomp; with --log-denials also Landlock and the network), and
        /// the report lines (each saying what would allow it).
        Refused { total: u32, report: Vec<String> },
        /// Right after `Refused` once the command has ended and every other
        /// process of the sandbox is gone: its exit status. The launcher
        /// returns it without waiting for init to end (the kernel then
        /// takes the sandbox's mounts down), as bubblewrap does.
        Exited { code: u8 },
    }
}

conversation! {
    /// payload → init, before the payload confines itself for good.
    pub enum FromPayload ("the payload's messages to init") {
        /// The seccomp notification listener is attached.
        SeccompListener,
    }
}

conversation! {
    /// `sbox exec` → init, first on a connection to the control socket.
    pub enum ExecRequest ("the request of `sbox exec`") {
        /// Run a command in the sandbox. Without `tty`, its stdin, stdout
        /// and stderr are attached: pipes (and /dev/null) that `sbox exec`
        /// relays, never the caller's own descriptors.
        Exec {
            argv: Vec<String>,
            env: Vec<(String, String)>,
            cwd: Option<std::path::PathBuf>,
            tty: bool,
        },
    }
}

conversation! {
    /// init → `sbox exec`: the answer to its request.
    pub enum ExecAnswer ("init's answer to `sbox exec`") {
        /// Started (the pty master attached with `tty`).
        ExecStarted { pid: i32 },
        /// Could not start it.
        ExecFailed { error: String },
    }
}

conversation! {
    /// init → `sbox exec`, once the command runs.
    pub enum ExecEvent ("init's messages to `sbox exec`") {
        /// The command ended with this status.
        ExecExited { code: u8 },
        /// The sandbox ran out of time (--timeout) and is being stopped.
        TimedOut { millis: u64 },
        /// The command was the last session of a sandbox that lives while
        /// its sessions do; the sandbox ends now.
        Ending,
    }
}

conversation! {
    /// `sbox exec` → init, once the command runs.
    pub enum ExecControl ("the messages of `sbox exec` to init") {
        /// Deliver this signal to the command.
        Signal { signo: i32 },
        /// `sbox shell` joining: hang up the command's session (SIGHUP to
        /// it and its process group, SIGKILL after the grace period).
        Hangup,
        /// The caller's terminal changed size.
        Resize { rows: u16, cols: u16 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::channel::{Channel, Message, RecvError};

    fn unexpected<M: Message + std::fmt::Debug>(
        r: Result<Option<(M, Option<std::os::fd::OwnedFd>)>, RecvError>,
    ) -> String {
        match r {
            Err(RecvError::Unexpected(u)) => u.to_string(),
            other => panic!("expected an unexpected-message error, got {other:?}"),
        }
    }

    #[test]
    fn a_message_of_another_conversation_names_expected_and_received() {
        let (a, b) = Channel::pair().expect("pair");
        a.send(&FromInit::Ready { pty: false }, None).expect("send");
        let e = unexpected(b.recv::<ToInit>());
        assert_eq!(
            e,
            "the launcher's messages to init: expected MapsWritten, got Ready"
        );
        a.send(
            &ExecRequest::Exec {
                argv: vec!["true".into()],
                env: vec![],
                cwd: None,
                tty: false,
            },
            None,
        )
        .expect("send");
        let e = unexpected(b.recv::<ExecControl>());
        assert_eq!(
            e,
            "the messages of `sbox exec` to init: expected Signal, Hangup or Resize, got Exec"
        );
        // The channel goes on: the next message is read as usual.
        a.send(&ExecControl::Hangup, None).expect("send");
        let (m, _) = b.recv::<ExecControl>().expect("recv").expect("msg");
        assert_eq!(m, ExecControl::Hangup);
    }

    #[test]
    fn a_malformed_or_unreadable_message_is_named_as_such() {
        let (a, b) = Channel::pair().expect("pair");
        a.send(&ExecControl::Signal { signo: 15 }, None)
            .expect("send");
        // Same tag, other fields: Resize expects rows and cols.
        #[derive(serde::Serialize, serde::Deserialize)]
        enum Other {
            Resize { rows: String },
        }
        impl Message for Other {
            const WHAT: &'static str = "test";
            const KINDS: &'static [&'static str] = &["Resize"];
            fn kind(&self) -> &'static str {
                "Resize"
            }
        }
        a.send(&Other::Resize { rows: "x".into() }, None)
            .expect("send");
        assert_eq!(
            b.recv::<ExecControl>().expect("recv").map(|x| x.0),
            Some(ExecControl::Signal { signo: 15 })
        );
        let e = unexpected(b.recv::<ExecControl>());
        assert!(e.ends_with("got a malformed Resize"), "{e}");
        nix::sys::socket::send(
            a.raw(),
            b"\xff not json",
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("send");
        let e = unexpected(b.recv::<ExecAnswer>());
        assert_eq!(
            e,
            "init's answer to `sbox exec`: expected ExecStarted or ExecFailed, got an unreadable message"
        );
    }

    #[test]
    fn every_kind_is_listed_and_named() {
        assert_eq!(
            FromInit::KINDS,
            [
                "FuseFd",
                "FuseBindFd",
                "ProcFs",
                "EgressSocket",
                "Ready",
                "Refused",
                "Exited"
            ]
        );
        assert_eq!(FromInit::FuseBindFd { step: 1 }.kind(), "FuseBindFd");
        assert_eq!(ExecEvent::Ending.kind(), "Ending");
        let u = FromInit::Refused {
            total: 0,
            report: vec![],
        }
        .unexpected("FuseFd, FuseBindFd or Ready");
        assert_eq!(
            u.to_string(),
            "init's messages to the launcher: expected FuseFd, FuseBindFd or Ready, got Refused"
        );
    }

    #[test]
    fn the_wire_tags_are_the_variant_names() {
        // An `sbox exec` of this version talks to a sandbox started by an
        // earlier one: the encoding must not change.
        assert_eq!(j(&ToInit::MapsWritten), r#""MapsWritten""#);
        assert_eq!(
            j(&ExecControl::Resize { rows: 2, cols: 3 }),
            r#"{"Resize":{"rows":2,"cols":3}}"#
        );
        assert_eq!(
            j(&ExecAnswer::ExecStarted { pid: 7 }),
            r#"{"ExecStarted":{"pid":7}}"#
        );
        assert_eq!(
            j(&ExecEvent::ExecExited { code: 1 }),
            r#"{"ExecExited":{"code":1}}"#
        );
    }

    fn j(m: &impl serde::Serialize) -> String {
        serde_json::to_string(m).expect("json")
    }
}
