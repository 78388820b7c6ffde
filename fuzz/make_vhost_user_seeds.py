#!/usr/bin/env python3
"""Writes the seeds of the `vhost_user` fuzz target (fuzz/seeds/vhost_user/).

The target's input is a list of records `spec:u8 len:u16le bytes[len]`, one
sendmsg each; `spec & 7` fds ride on the record, of kinds
KINDS[((spec >> 3) + i) % 7] (see fuzz_targets/vhost_user.rs). Each seed
here is a whole vhost-user session, one message per record, with the fds
the protocol wants (a memfd per memory region, an eventfd per kick/call),
so the fuzzer starts from a port with mapped memory and running rings.

    python3 fuzz/make_vhost_user_seeds.py
"""
import os
import struct

# fd kinds, in the target's order
EVENTFD, MEMFD, TINY_MEMFD, DEV_NULL, SOCKET, PIPE, DIRECTORY = range(7)

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE = 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 15, 16
GET_QUEUE_NUM, SET_VRING_ENABLE = 17, 18

VERSION = 0x1
NEED_REPLY = 0x8
MEM = 2 << 20
UADDR = 0x7F00_0000_0000


def msg(req, payload=b"", flags=VERSION):
    return struct.pack("<III", req, flags, len(payload)) + payload


def rec(data, nfds=0, first_kind=0):
    assert nfds < 8 and first_kind < 32
    return bytes([(first_kind << 3) | nfds]) + struct.pack("<H", len(data)) + data


def u64(v):
    return struct.pack("<Q", v)


def mem_table(regions):
    p = struct.pack("<II", len(regions), 0)
    for gpa, size, uaddr, off in regions:
        p += struct.pack("<QQQQ", gpa, size, uaddr, off)
    return msg(SET_MEM_TABLE, p)


def negotiate(features=(1 << 32) | (1 << 30) | (1 << 15) | (1 << 29)):
    return [
        rec(msg(SET_OWNER)),
        rec(msg(GET_FEATURES)),
        rec(msg(SET_FEATURES, u64(features))),
        rec(msg(GET_PROTOCOL_FEATURES)),
        rec(msg(SET_PROTOCOL_FEATURES, u64(0x9))),  # MQ | REPLY_ACK
        rec(msg(GET_QUEUE_NUM)),
    ]


def ring(index, num=256, kick_kind=EVENTFD, mem_base=UADDR):
    base = mem_base + 0x10000 * (index + 1)
    desc, avail, used = base, base + 16 * num, base + 0x8000
    return [
        rec(msg(SET_VRING_NUM, struct.pack("<II", index, num))),
        rec(msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", index, 0, desc, used, avail, 0))),
        rec(msg(SET_VRING_BASE, struct.pack("<II", index, 0))),
        rec(msg(SET_VRING_CALL, u64(index)), 1, EVENTFD),
        rec(msg(SET_VRING_KICK, u64(index)), 1, kick_kind),
        rec(msg(SET_VRING_ENABLE, struct.pack("<II", index, 1), VERSION | NEED_REPLY)),
    ]


def raw_to_records(raw):
    """An fd-less raw stream, one record per message (old seeds)."""
    out, at = [], 0
    while at + 12 <= len(raw):
        size = struct.unpack_from("<I", raw, at + 8)[0]
        out.append(rec(raw[at : at + 12 + size]))
        at += 12 + size
    if at < len(raw):
        out.append(rec(raw[at:]))
    return out


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "vhost_user")
    os.makedirs(here, exist_ok=True)
    one_region = [(0, MEM, UADDR, 0)]
    seeds = {
        # a port with memory and both rings of pair 0 running
        "running": negotiate()
        + [rec(mem_table(one_region), 1, MEMFD)]
        + ring(0)
        + ring(1),
        # ... then stopped, re-tabled and restarted
        "restart": negotiate()
        + [rec(mem_table(one_region), 1, MEMFD)]
        + ring(0)
        + ring(1)
        + [rec(msg(GET_VRING_BASE, struct.pack("<II", 0, 0)))]
        + [rec(mem_table(one_region), 1, MEMFD)]
        + ring(0),
        # wrong fds: a socket as memory, a directory as kick, 7 fds on a
        # message that takes none, a region past the end of a tiny memfd
        "wrong_fds": negotiate()
        + [rec(mem_table(one_region), 1, SOCKET)]
        + [rec(mem_table(one_region), 1, TINY_MEMFD)]
        + [rec(mem_table(one_region), 7, MEMFD)]
        + [rec(msg(GET_FEATURES), 7, EVENTFD)]
        + [rec(mem_table(one_region), 1, MEMFD)]
        + ring(0, kick_kind=DIRECTORY)
        + ring(1, kick_kind=PIPE),
    }
    # the fd-less seeds of the first version of this target, re-framed
    old = {
        "early_enable": "0100000001000000000000001200000009000000080000000000000001000000",
        "setup": "03000000010000000000000001000000010000000000000002000000010000000800000000000040010000000f0000000100000000000000100000000100000008000000090000000000000008000000010000000800000000000000000100000a000000010000000800000000000000000000000b000000010000000800000000000000000000001200000009000000080000000100000001000000110000000100000000000000",
    }
    for name, hexs in old.items():
        seeds[name] = raw_to_records(bytes.fromhex(hexs))
    for name, records in seeds.items():
        with open(os.path.join(here, name), "wb") as f:
            f.write(b"".join(records))


if __name__ == "__main__":
    main()
