"""A sandbox confining itself, first thing after it starts.

:func:`apply` runs before the module is imported, in a single-threaded process,
and stacks these layers (each one optional in the plan, each one reported):

1. cgroups hostd prepared (memory and process limits; root only);
2. namespaces and a private filesystem view (``isolate``): new mount, network
   and IPC namespaces, plus a user namespace when hostd is not root
   (``"user"``); ``/root``, ``/tmp``, the modules folders and hostd's data dir
   covered by empty tmpfs with only what the module needs bound back, its own
   code read-only; as root (``"root"``) it then drops to its own uid;
3. rlimits (open files, no core dumps, address space as a backstop, processes),
   and death with hostd (``PDEATHSIG``);
4. Landlock (``landlock``): a filesystem allow-list, no TCP bind or connect, no
   signals or abstract unix sockets outside the sandbox;
5. seccomp (``seccomp``): only ``AF_UNIX`` sockets; no namespaces, ptrace,
   mount, bpf, io_uring, keyrings.

It returns ``{layer: description}``; a layer the kernel refuses is reported as
``"unavailable: <reason>"``, never silently left out, and never fatal.
"""
from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import socket

__all__ = ["apply", "probe", "UNAVAILABLE"]

#: how a description of a layer that could not be applied starts
UNAVAILABLE = "unavailable: "

_MB = 1024 * 1024
PR_SET_PDEATHSIG = 1
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWTIME = 0x10000000, 0x20000000, 0x40000000, 0x00000080
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
# flags of a mount that a user namespace may not clear when remounting it (statvfs f_flag bits)
_LOCKED_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 0x400 | 0x800 | 0x1000  # + NOATIME, NODIRATIME, RELATIME
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)

#: system folders every sandbox reads (and runs programs from)
_SYSTEM_CODE = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc")
#: system files a sandbox reads for CPU counts, memory sizes, its own state
_SYSTEM_READ = ("/sys/devices/system/cpu", "/sys/devices/system/node", "/proc/cpuinfo", "/proc/meminfo",
                "/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/version", "/proc/filesystems",
                "/proc/sys")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
#: syscalls no module needs, each a way out of (or around) the other layers
_DENIED_SYSCALLS = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace",
                    "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
                    "io_uring_register", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
                    "request_key", "open_by_handle_at", "name_to_handle_at", "kexec_load", "init_module",
                    "finit_module", "delete_module", "fsopen", "fsmount", "fsconfig", "move_mount",
                    "open_tree", "mount_setattr", "acct", "swapon", "swapoff", "syslog", "quotactl")
_NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                    CLONE_NEWNET, CLONE_NEWTIME)


def _ok(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype=None, flags=0, data=None) -> None:
    def encode(text):
        return text.encode() if text else None
    _ok(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
        f"mount {target}")


def _bind(source: str, target: str, readonly: bool) -> None:
    _mount(source, target, flags=MS_BIND | MS_REC)
    if readonly:  # a user namespace must keep the flags the mount already has (nosuid, nodev...)
        kept = os.statvfs(target).f_flag & _LOCKED_FLAGS
        _mount(None, target, flags=MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def _cover(top: str, keep: dict, mode: str) -> None:
    """Mount an empty tmpfs on ``top``, then bind back the paths of ``keep`` ({path: readonly}) under it."""
    inside = {p: ro for p, ro in keep.items() if p.startswith(top + "/") and os.path.exists(p)}
    inside = {p: ro for p, ro in inside.items() if not any(p.startswith(q + "/") for q in inside if q != p)}
    handles = {p: os.open(p, os.O_PATH) for p in inside}  # grabbed before they are hidden
    try:
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, f"size=64m,mode={mode}")
        for path, readonly in inside.items():
            source = f"/proc/self/fd/{handles[path]}"
            if os.path.isdir(source):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "a").close()
            _bind(source, path, readonly)
    finally:
        for handle in handles.values():
            os.close(handle)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _keep(plan: dict) -> dict:
    """``{path: readonly}`` of what the module sees through the private filesystem view."""
    keep = {path: True for key in ("code", "list", "read") for path in plan.get(key) or []}
    keep.update({path: False for path in plan.get("write") or []})
    return keep


def _enter_namespaces(mode: str) -> str:
    """New mount, network and IPC namespaces (and a user namespace in ``user`` mode)."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
    if mode != "user":
        _ok(_libc.unshare(flags), "unshare")
        return "own network, mount and IPC namespaces"
    uid, gid = os.getuid(), os.getgid()
    _ok(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
    with open("/proc/self/setgroups", "w") as handle:  # required before an unprivileged gid_map
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")
    return f"own user (uid {uid} as itself), network, mount and IPC namespaces"


def _private_filesystem(plan: dict, mode: str) -> tuple[str, bool]:
    """Cover the hidden folders, bind back what the module needs, remount its code read-only.

    :returns: ``(description, whether /proc shows only its own processes)``.
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = _keep(plan)
    hide = plan.get("hide") or []
    for top, folder_mode in sorted(hide, key=lambda item: len(item[0])):
        if os.path.isdir(top):
            _cover(top, keep, folder_mode)
    for path, readonly in keep.items():  # its own code read-only wherever it lives
        if readonly and os.path.exists(path) and not any(path.startswith(t + "/") for t, _ in hide):
            _bind(path, path, True)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    hidden_processes = False
    if mode != "user":  # proc needs a pid namespace of its own in a user namespace: Landlock hides it there
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
        hidden_processes = True
    os.chdir(plan.get("workdir") or "/")
    return "sees only its own folders; its code read-only; private /tmp and /dev/shm", hidden_processes


def _drop_capabilities() -> None:
    """Give up the capabilities a user namespace grants (no unmounting the covers, no new mounts)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all zero
    _ok(_libc.capset(header, data), "capset")


def _drop_uid(plan: dict) -> str:
    uid, gid = int(plan["uid"]), int(plan["gid"])
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    return str(uid)


def _isolate(plan: dict, enforced: dict) -> dict:
    """Namespaces, private mounts, then (as root) the module's own uid; each step reported.

    :returns: what the Landlock layer needs to know (``{"private_tmp": bool, "hidden_processes": bool}``).
    """
    mode = "user" if plan["isolate"] == "user" else "root"
    state = {"private_tmp": False, "hidden_processes": False}
    threads = _threads()
    if mode == "user" and threads > 1:
        enforced["namespaces"] = f"{UNAVAILABLE}{threads} threads (a user namespace needs a single thread)"
        return state
    try:
        enforced["namespaces"] = _enter_namespaces(mode)
        enforced["network"] = "no network (own namespace): the store only through hostd's relay"
    except OSError as err:
        enforced["namespaces"] = f"{UNAVAILABLE}{err}"
        return state
    try:
        enforced["filesystem"], state["hidden_processes"] = _private_filesystem(plan, mode)
        state["private_tmp"] = True
        if state["hidden_processes"]:
            enforced["processes_view"] = "sees only its own processes (/proc hidepid)"
    except OSError as err:
        enforced["filesystem"] = f"{UNAVAILABLE}{err}"
    if mode == "user":
        try:
            _drop_capabilities()
            enforced["namespaces"] += "; no capabilities left"
        except OSError as err:
            enforced["capabilities"] = f"{UNAVAILABLE}{err}"
    else:
        try:
            enforced["uid"] = _drop_uid(plan)
        except (OSError, KeyError, ValueError) as err:
            enforced["uid"] = f"{UNAVAILABLE}{err}"
    return state


def _set(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))


def _rlimits(plan: dict, enforced: dict, own_process_count: bool) -> None:
    _set(resource.RLIMIT_CORE, 0)
    enforced["core"] = "no core dumps"
    if plan.get("max_open_files"):
        _set(resource.RLIMIT_NOFILE, int(plan["max_open_files"]))
        enforced["open_files"] = str(plan["max_open_files"])
    if plan.get("address_space_mb"):
        _set(resource.RLIMIT_AS, int(plan["address_space_mb"]) * _MB)
        enforced["address_space"] = f"{plan['address_space_mb']} MiB"
    if plan.get("max_processes") and own_process_count:
        # counted per uid (threads included): only meaningful with a uid, or a user namespace, of its own
        _set(resource.RLIMIT_NPROC, int(plan["max_processes"]))
        enforced["processes"] = str(plan["max_processes"])


def _die_with_parent(plan: dict, enforced: dict) -> None:
    _ok(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # after any uid change
    parent = plan.get("parent_pid")
    if parent and os.getppid() != parent:  # it died before prctl: nobody would kill us
        os._exit(70)
    enforced["pdeathsig"] = "dies with hostd"


def _landlock_rules(plan: dict, state: dict, access) -> list:
    """``[(path, rights)]``: the filesystem allow-list."""
    read = access.READ_FILE | access.READ_DIR
    code = read | access.EXECUTE
    write = (read | access.WRITE_FILE | access.TRUNCATE | access.MAKE_REG | access.MAKE_DIR
             | access.REMOVE_FILE | access.REMOVE_DIR | access.MAKE_SOCK | access.MAKE_FIFO
             | access.MAKE_SYM | access.REFER | access.RESOLVE_UNIX)
    rules = [(p, code) for p in (*_SYSTEM_CODE, *(plan.get("code") or []))]
    rules += [(p, access.READ_DIR) for p in plan.get("list") or []]  # imports list them; their files stay closed
    rules += [(p, read) for p in (*_SYSTEM_READ, *(plan.get("read") or []))]
    writable = list(plan.get("write") or [])
    if state["private_tmp"]:  # never the host's shared /tmp: hostd's or others' files may be there
        writable += ["/tmp", "/dev/shm"]
    rules += [(p, write) for p in writable]
    rules += [(p, access.READ_FILE | access.WRITE_FILE) for p in _DEVICES]
    # /proc: all of it when it shows only our processes, else only our own entry
    rules += [("/proc", read)] if state["hidden_processes"] else [(f"/proc/{os.getpid()}", read)]
    return rules


def _landlock(plan: dict, state: dict) -> str:
    try:
        import landlockpy
        from landlockpy import AccessFS, RestrictFlag, Ruleset, Scope
    except ImportError as err:
        return f"{UNAVAILABLE}landlockpy cannot be imported ({err})"
    abi = landlockpy.abi_version()
    if abi < 1:
        return f"{UNAVAILABLE}the kernel has no Landlock (disabled or too old)"
    file_rights = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.EXECUTE | AccessFS.TRUNCATE
    with Ruleset(scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as ruleset:
        for path, rights in _landlock_rules(plan, state, AccessFS):
            if os.path.exists(path):
                ruleset.allow_path(path, rights if os.path.isdir(path) else rights & file_rights)
        threads = _threads()
        ruleset.restrict(RestrictFlag.TSYNC)  # TSYNC (ABI 8) also confines other threads; dropped before
        covers = ["files outside its allow-list" + ("" if state["hidden_processes"] else
                                                    ", other processes' /proc entries")]
        covers += ["TCP bind/connect"] if ruleset.handled_net & landlockpy.AccessNet.CONNECT_TCP else []
        covers += ["signals and abstract unix sockets outside the sandbox"] if ruleset.scoped else []
    text = f"ABI {abi}: denies " + ", ".join(covers)
    if abi < 6:
        text += f"; this kernel's Landlock cannot deny {'TCP, ' if abi < 4 else ''}signals or abstract sockets"
    if threads > 1 and abi < 8:
        text += f"; partial: {threads} threads, only the one that confined itself is restricted"
    return text


def _seccomp() -> str:
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as err:  # also: libseccomp itself is missing
        return f"{UNAVAILABLE}pyseccomp/libseccomp cannot be loaded ({err})"
    try:
        seccomp_filter = sc.SyscallFilter(defaction=sc.ALLOW)  # sets no_new_privs by default
        seccomp_filter.set_attr(sc.Attr.CTL_TSYNC, 1)  # every thread, should any exist
        seccomp_filter.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
        for flag in _NAMESPACE_FLAGS:  # clone() into new namespaces; clone3 cannot be inspected
            seccomp_filter.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        seccomp_filter.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone
        for name in _DENIED_SYSCALLS:
            seccomp_filter.add_rule(sc.ERRNO(errno.EPERM), name)
        seccomp_filter.load()
    except (OSError, RuntimeError, ValueError) as err:
        return f"{UNAVAILABLE}{err}"
    return "AF_UNIX sockets only; no namespaces, ptrace, mount, bpf, io_uring, keyrings"


def apply(plan: dict) -> dict:
    """Confine this process according to ``plan`` (the ``confinement`` part of the spec).

    :param plan: ``memory_mb``, ``max_open_files``, ``max_processes``, ``cgroup_procs``
        (``cgroup.procs`` files to join), ``address_space_mb`` (backstop), ``cpu`` (the
        one CPU to run on; threads started afterwards, ZeroMQ's among them, inherit it),
        ``parent_pid`` (hostd or its fork server: exit at once if it is already gone);
        ``isolate`` (``"root"``: namespaces, private mounts, then ``uid``/``gid``;
        ``"user"``: the same in a user namespace, keeping the uid), with ``code``
        (read + run), ``list`` (list only: a source root whose packages are in ``code``),
        ``read`` and ``write`` folders, ``hide`` (``[[folder, tmpfs mode]]``) and
        ``workdir``; ``landlock`` and ``seccomp`` (booleans).
    :returns: ``{layer: description}`` of what is enforced; ``"unavailable: ..."`` for
        a layer asked for that could not be applied.
    """
    enforced = {}
    joined = []
    for procs in plan.get("cgroup_procs") or []:
        try:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
            joined.append(procs)
        except OSError:
            continue
    if joined:
        enforced["cgroups"] = f"memory {plan.get('memory_mb')} MiB, {plan.get('max_processes')} processes"
    elif plan.get("cgroup_procs"):
        enforced["cgroups"] = f"{UNAVAILABLE}cannot join {plan['cgroup_procs'][0]}"
    state = {"private_tmp": False, "hidden_processes": False}
    if plan.get("isolate"):
        state = _isolate(plan, enforced)
    if plan.get("cpu") is not None:
        try:
            os.sched_setaffinity(0, {int(plan["cpu"])})
            enforced["cpu"] = f"runs on CPU {plan['cpu']}"
        except OSError as err:  # e.g. that CPU went offline: run anywhere
            enforced["cpu"] = f"not pinned: {err}"
    own_count = ("uid" in enforced and not enforced["uid"].startswith(UNAVAILABLE)) or (
        plan.get("isolate") == "user" and os.getuid() != 0 and not enforced["namespaces"].startswith(UNAVAILABLE))
    _rlimits(plan, enforced, own_count)
    _die_with_parent(plan, enforced)
    if plan.get("landlock"):
        try:
            enforced["landlock"] = _landlock(plan, state)
        except OSError as err:
            enforced["landlock"] = f"{UNAVAILABLE}{err}"
    if plan.get("seccomp"):  # last: the layers above need syscalls it denies
        enforced["seccomp"] = _seccomp()
    return enforced


def probe(mode: str) -> dict:
    """What this machine offers a sandbox, checked without confining the caller.

    :param mode: ``"root"`` or ``"user"`` (see :func:`apply`).
    :returns: ``{layer: "available..." or "unavailable: <reason>"}``.
    """
    found = {}
    if mode == "user":
        found["namespaces"] = _probe_user_namespaces()
    try:
        import landlockpy
        abi = landlockpy.abi_version()
        found["landlock"] = (f"available (ABI {abi})" if abi >= 6 else
                             f"{UNAVAILABLE}the kernel has no Landlock" if abi < 1 else
                             f"partial (ABI {abi}): no {'TCP, ' if abi < 4 else ''}signal or abstract socket scopes")
    except ImportError as err:
        found["landlock"] = f"{UNAVAILABLE}landlockpy cannot be imported ({err})"
    try:
        import pyseccomp  # noqa: F401 - loads libseccomp
        with open("/proc/self/status", encoding="ascii") as handle:
            has_seccomp = any(line.startswith("Seccomp:") for line in handle)
        found["seccomp"] = "available" if has_seccomp else f"{UNAVAILABLE}the kernel has no seccomp"
    except (ImportError, OSError, RuntimeError) as err:
        found["seccomp"] = f"{UNAVAILABLE}pyseccomp/libseccomp cannot be loaded ({err})"
    return found


def _probe_user_namespaces() -> str:
    for path, refused in (("/proc/sys/user/max_user_namespaces", "0"),
                          ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                          ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            with open(path, encoding="ascii") as handle:
                if handle.read().strip() == refused:
                    return f"{UNAVAILABLE}{path} is {refused}"
        except OSError:
            continue
    return "available"
