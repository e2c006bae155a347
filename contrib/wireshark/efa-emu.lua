-- Wireshark dissector for efa-emu, the emulated AWS EFA fabric.
--
-- Decodes the 40-byte base header of every efa-emu datagram (src/wire/header.ts), the SRD
-- extensions (src/wire/srd-header.ts) and the RDMA extension that RDMA writes, read requests
-- and read responses carry after their SRD data part (src/wire/rdma-header.ts); the rest of
-- the datagram is shown as data. An SRD_DATA payload that is an RDM endpoint's packet
-- (src/rdm/rdm-wire.ts: libfabric's EFA RDM protocol v4) is decoded as a second protocol,
-- "EFA RDM protocol v4" (efa_rdm), and the Info column names the message's protocol path
-- (eager, medium, longcts, longread); rdm_layout below says how such a payload is told from an
-- application's own bytes, and the "Decode RDM packets" preference (efa_emu.decode_rdm) turns
-- that off. It finds the traffic by itself (heuristic on UDP: magic 0xEFA1, version 1 or 2),
-- and can also be forced onto a port with "Decode As... -> UDP port -> EFA_EMU" or the
-- "UDP port" preference.
--
-- A bundle (src/io/datagram-coalescer.ts: several packets for one destination sent as one
-- datagram, type BUNDLE_TYPE) is shown as an "efa-emu bundle, N packets" item holding one
-- subtree per packet, each decoded as that packet alone would be; the Info column reads
-- "Bundle of N: <info of packet 1>; <info of packet 2>; ...". efa-emu's own --capture writes
-- each packet as its own record, so bundles appear only in captures taken on the wire.
--
-- The flags byte also carries the packet's network path (bits 2-7, 0..63: src/wire/header.ts),
-- the SRD requester's choice among its paths to the peer; an ack or NAK comes back on the path
-- of the data packet it answers. It is shown as efa_emu.path in the flags subtree, and the Info
-- column adds "path=N" after the QPNs when N is not 0 (path 0 is also what UD packets, a device
-- with one path and older emulators send, so their Info reads as before).
--
-- Load: wireshark -X lua_script:efa-emu.lua run.pcap
--   or copy it into the personal Lua plugins folder (Help > About > Folders). See README.md.
--
-- Filter fields (all under efa_emu.*):
--   efa_emu.magic efa_emu.version efa_emu.type efa_emu.flags efa_emu.flags.has_imm
--   efa_emu.path (flags bits 2-7; version 2) efa_emu.flags.rnr_last (version 1 only)
--   efa_emu.hdr_len efa_emu.src_qpn efa_emu.dst_qpn efa_emu.payload_len efa_emu.qkey
--   efa_emu.imm efa_emu.src_gid efa_emu.src_gid.fabric_id efa_emu.src_gid.device_index
--   efa_emu.crc efa_emu.crc.status
--   efa_emu.srd.session efa_emu.srd.psn (data, RDMA and NAK, so one filter follows a PSN)
--   efa_emu.srd.window_start efa_emu.srd.tx_time efa_emu.srd.dest_incarnation
--   efa_emu.srd.piggyback.session efa_emu.srd.piggyback.cum_ack efa_emu.srd.piggyback.echo_time
--   efa_emu.srd.cum_ack efa_emu.srd.echo_time (ack and NAK) efa_emu.srd.incarnation
--   efa_emu.srd.sack_base efa_emu.srd.sack efa_emu.srd.sack_count efa_emu.srd.sacked_psn
--   efa_emu.srd.sack_ranges
--   efa_emu.srd.nak_status efa_emu.srd.reserved efa_emu.srd.ext_unknown
--   efa_emu.rdma.rkey efa_emu.rdma.addr efa_emu.rdma.length efa_emu.rdma.op_id
--     (SRD_RDMA_WRITE, SRD_READ_REQ, SRD_READ_RESP; their SRD part uses the efa_emu.srd.* fields
--     of SRD_DATA)
--   efa_emu.bundle.magic efa_emu.bundle.version efa_emu.bundle.type efa_emu.bundle.count
--   efa_emu.bundle.reserved efa_emu.bundle.packet (one per packet: its subtree)
--   efa_emu.bundle.len (one per packet) efa_emu.bundle.trailing (bytes no packet accounts for)
--
-- RDM fields (all under efa_rdm.*):
--   efa_rdm.type efa_rdm.version efa_rdm.flags efa_rdm.flags.raw_addr_hdr
--   efa_rdm.flags.cq_data_hdr efa_rdm.flags.msg efa_rdm.flags.tagged efa_rdm.flags.read_nack
--   efa_rdm.flags.connid_hdr efa_rdm.flags.read_req (CTS) efa_rdm.flags.host_id_hdr
--   efa_rdm.flags.device_version_hdr efa_rdm.flags.user_recv_qp_hdr efa_rdm.flags.hmem_p2p_hdr
--   (HANDSHAKE)
--   efa_rdm.msg_id efa_rdm.tag efa_rdm.msg_length efa_rdm.seg_offset efa_rdm.seg_length
--   efa_rdm.send_id efa_rdm.recv_id efa_rdm.credit_request efa_rdm.read_iov_count
--   efa_rdm.recv_length efa_rdm.cq_data efa_rdm.connid
--   efa_rdm.peer_error.op_id efa_rdm.peer_error.ref_kind efa_rdm.peer_error.prov_errno
--   efa_rdm.raw_addr efa_rdm.raw_addr.len efa_rdm.raw_addr.gid efa_rdm.raw_addr.qpn
--   efa_rdm.raw_addr.connid
--   efa_rdm.read_iov.addr efa_rdm.read_iov.len efa_rdm.read_iov.key
--   efa_rdm.handshake.nextra_p3 efa_rdm.handshake.extra_info efa_rdm.handshake.features
--   efa_rdm.handshake.feature.<name> (rdma_read delivery_complete constant_header_length
--   connid_header runt rdma_write read_nack request_user_recv_qp unsolicited_write_recv
--   peer_error) efa_rdm.handshake.host_id efa_rdm.handshake.device_version
--   efa_rdm.handshake.user_recv_qp.qpn efa_rdm.handshake.user_recv_qp.qkey
--   efa_rdm.handshake.p2p_supported
--   efa_rdm.reserved efa_rdm.protocol (generated: eager, medium, longcts, longread)
--   efa_rdm.payload_len (generated)
--
-- Written against the Wireshark 3.x/4.x Lua API; works with Lua 5.1 to 5.4.

local efa = Proto("efa_emu", "efa-emu Fabric (emulated EFA)")

---------------------------------------------------------------------------------------------
-- Wire constants (keep in step with src/wire/header.ts, src/wire/srd-header.ts and
-- src/wire/rdma-header.ts).

local WIRE_MAGIC = 0xEFA1
local WIRE_VERSION = 2
-- Version 1 differs only in SRD: acks had no sack_base (the map started at cum_ack + 1) and
-- data had an RNR_LAST flag. Its captures still decode.
local WIRE_VERSION_1 = 1
local BASE_HEADER_LEN = 40
-- SRD_DATA grew from 56 bytes to 60 (dest_incarnation), then 72 (piggybacked ack); each
-- part is decoded when hdr_len covers it, so captures of older emulators still read right.
local SRD_DATA_MIN_LEN = 56
local SRD_DATA_INCARN_LEN = 60
local SRD_DATA_HDR_LEN = 72
local SRD_ACK_HDR_LEN = 76
local SRD_ACK_V1_HDR_LEN = 72
local SRD_NAK_HDR_LEN = 56
-- RDMA packets: the SRD_DATA header (72 bytes, always complete: these types are newer than it),
-- then rkey, addr (u64), length and op_id.
local RDMA_HDR_LEN = 92
local SACK_BITS = 128
-- Bundles: an 8-byte header (magic, version, type, count u16, reserved u16), then per packet
-- a u16 length and the packet. The type lies outside the packet types, so nothing older
-- mistakes a bundle for a packet; only the current version bundles.
local BUNDLE_TYPE = 0x40
local BUNDLE_HEADER_LEN = 8
local BUNDLE_ENTRY_LEN = 2
local FLAG_HAS_IMM = 0x01
-- The path takes the flag bits from FLAG_PATH_SHIFT up; FLAG_PATH_MASK is those bits.
local FLAG_PATH_SHIFT = 2
local FLAG_PATH_MASK = 0xFC
local FLAG_RNR_LAST_V1 = 0x02

local UD_SEND, SRD_DATA, SRD_ACK, SRD_NAK = 1, 2, 3, 4
local SRD_RDMA_WRITE, SRD_READ_REQ, SRD_READ_RESP = 5, 6, 7
local type_names = {
    [UD_SEND] = "UD_SEND",
    [SRD_DATA] = "SRD_DATA",
    [SRD_ACK] = "SRD_ACK",
    [SRD_NAK] = "SRD_NAK",
    [SRD_RDMA_WRITE] = "SRD_RDMA_WRITE",
    [SRD_READ_REQ] = "SRD_READ_REQ",
    [SRD_READ_RESP] = "SRD_READ_RESP",
}

-- The RDMA types: SRD data packets (sequenced, acked) with the RDMA extension after it.
local function is_rdma(ptype)
    return ptype == SRD_RDMA_WRITE or ptype == SRD_READ_REQ or ptype == SRD_READ_RESP
end
-- Types whose SRD part is an SRD_DATA header (isSrdData in src/wire/header.ts).
local function is_srd_data(ptype)
    return ptype == SRD_DATA or is_rdma(ptype)
end

-- EFA completion statuses, as a NAK carries them (DESIGN section 6, src/common/efa-status.ts).
local efa_status_names = {
    [0] = "SUCCESS",
    [1] = "FLUSHED",
    [2] = "LOCAL_ERROR_QP_INTERNAL_ERROR",
    [3] = "LOCAL_ERROR_UNSUPPORTED_OP",
    [4] = "LOCAL_ERROR_INVALID_AH",
    [5] = "LOCAL_ERROR_INVALID_LKEY",
    [6] = "LOCAL_ERROR_BAD_LENGTH",
    [7] = "REMOTE_ERROR_BAD_ADDRESS",
    [8] = "REMOTE_ERROR_ABORT",
    [9] = "REMOTE_ERROR_BAD_DEST_QPN",
    [10] = "REMOTE_ERROR_RNR",
    [11] = "REMOTE_ERROR_BAD_LENGTH",
    [12] = "REMOTE_ERROR_BAD_STATUS",
    [13] = "LOCAL_ERROR_UNRESP_REMOTE",
    [14] = "REMOTE_ERROR_UNKNOWN_PEER",
    [15] = "LOCAL_ERROR_UNREACH_REMOTE",
    [18] = "REMOTE_ERROR_FEATURE_MISMATCH",
}

-- Wireshark's usual checksum status values.
local CRC_BAD, CRC_GOOD, CRC_UNVERIFIED = 0, 1, 2
local crc_status_names = { [CRC_BAD] = "Bad", [CRC_GOOD] = "Good", [CRC_UNVERIFIED] = "Unverified" }

---------------------------------------------------------------------------------------------
-- Fields.

local f = {
    magic = ProtoField.uint16("efa_emu.magic", "Magic", base.HEX),
    version = ProtoField.uint8("efa_emu.version", "Version", base.DEC),
    type = ProtoField.uint8("efa_emu.type", "Type", base.DEC, type_names),
    flags = ProtoField.uint8("efa_emu.flags", "Flags", base.HEX),
    has_imm = ProtoField.bool("efa_emu.flags.has_imm", "HAS_IMM", 8,
        { "Immediate data present", "No immediate data" }, FLAG_HAS_IMM),
    path = ProtoField.uint8("efa_emu.path", "Path", base.DEC, nil, FLAG_PATH_MASK),
    rnr_last = ProtoField.bool("efa_emu.flags.rnr_last", "RNR_LAST (version 1)", 8,
        { "Last attempt before REMOTE_ERROR_RNR", "Not the last RNR attempt" }, FLAG_RNR_LAST_V1),
    hdr_len = ProtoField.uint8("efa_emu.hdr_len", "Header length", base.DEC),
    src_qpn = ProtoField.uint16("efa_emu.src_qpn", "Source QPN", base.DEC),
    dst_qpn = ProtoField.uint16("efa_emu.dst_qpn", "Destination QPN", base.DEC),
    payload_len = ProtoField.uint16("efa_emu.payload_len", "Payload length", base.DEC),
    qkey = ProtoField.uint32("efa_emu.qkey", "Q_Key", base.HEX),
    imm = ProtoField.uint32("efa_emu.imm", "Immediate data", base.HEX),
    src_gid = ProtoField.ipv6("efa_emu.src_gid", "Source GID"),
    gid_fabric = ProtoField.uint32("efa_emu.src_gid.fabric_id", "Fabric id", base.HEX),
    gid_index = ProtoField.uint32("efa_emu.src_gid.device_index", "Device index", base.DEC),
    crc = ProtoField.uint32("efa_emu.crc", "CRC-32", base.HEX),
    crc_status = ProtoField.uint8("efa_emu.crc.status", "CRC status", base.DEC, crc_status_names),

    session = ProtoField.uint32("efa_emu.srd.session", "Session", base.HEX),
    psn = ProtoField.uint32("efa_emu.srd.psn", "PSN", base.DEC),
    window_start = ProtoField.uint32("efa_emu.srd.window_start", "Window start", base.DEC),
    tx_time = ProtoField.uint32("efa_emu.srd.tx_time", "TX time (us, sender clock)", base.DEC),
    dest_incarnation = ProtoField.uint32("efa_emu.srd.dest_incarnation", "Destination incarnation", base.DEC),
    pb_session = ProtoField.uint32("efa_emu.srd.piggyback.session", "Session acked", base.HEX),
    pb_cum_ack = ProtoField.uint32("efa_emu.srd.piggyback.cum_ack", "Cumulative ack", base.DEC),
    pb_echo_time = ProtoField.uint32("efa_emu.srd.piggyback.echo_time", "Echoed TX time (us)", base.DEC),
    incarnation = ProtoField.uint32("efa_emu.srd.incarnation", "Incarnation (acknowledging device)", base.DEC),
    ext_unknown = ProtoField.bytes("efa_emu.srd.ext_unknown", "Extension bytes not known to this dissector"),
    cum_ack = ProtoField.uint32("efa_emu.srd.cum_ack", "Cumulative ack", base.DEC),
    echo_time = ProtoField.uint32("efa_emu.srd.echo_time", "Echoed TX time (us)", base.DEC),
    reserved = ProtoField.bytes("efa_emu.srd.reserved", "Reserved"),
    sack_base = ProtoField.uint32("efa_emu.srd.sack_base", "SACK base (PSN of bit 0)", base.DEC),
    sack = ProtoField.bytes("efa_emu.srd.sack", "SACK bitmap"),
    sack_count = ProtoField.uint32("efa_emu.srd.sack_count", "SACKed PSNs", base.DEC),
    sacked_psn = ProtoField.uint32("efa_emu.srd.sacked_psn", "SACKed PSN", base.DEC),
    sack_ranges = ProtoField.string("efa_emu.srd.sack_ranges", "SACKed ranges"),
    nak_status = ProtoField.uint8("efa_emu.srd.nak_status", "Status", base.DEC, efa_status_names),

    rkey = ProtoField.uint32("efa_emu.rdma.rkey", "R_Key", base.HEX),
    addr = ProtoField.uint64("efa_emu.rdma.addr", "Address", base.HEX),
    rdma_length = ProtoField.uint32("efa_emu.rdma.length", "Length (whole operation)", base.DEC),
    op_id = ProtoField.uint32("efa_emu.rdma.op_id", "Read id", base.DEC),
}
-- The bundle's own header has fields of its own, so that efa_emu.type, efa_emu.magic and the
-- rest list exactly the packets of a frame, bundled or not, one occurrence each.
local fb = {
    magic = ProtoField.uint16("efa_emu.bundle.magic", "Magic", base.HEX),
    version = ProtoField.uint8("efa_emu.bundle.version", "Version", base.DEC),
    type = ProtoField.uint8("efa_emu.bundle.type", "Type", base.HEX, { [BUNDLE_TYPE] = "BUNDLE" }),
    count = ProtoField.uint16("efa_emu.bundle.count", "Packets", base.DEC),
    reserved = ProtoField.uint16("efa_emu.bundle.reserved", "Reserved", base.HEX),
    packet = ProtoField.none("efa_emu.bundle.packet", "Packet"),
    len = ProtoField.uint16("efa_emu.bundle.len", "Length", base.DEC),
    trailing = ProtoField.bytes("efa_emu.bundle.trailing", "Bytes no packet accounts for"),
}
local field_list = {}
for _, field in pairs(f) do field_list[#field_list + 1] = field end
for _, field in pairs(fb) do field_list[#field_list + 1] = field end
efa.fields = field_list

local ex = {
    bad_crc = ProtoExpert.new("efa_emu.crc.bad", "Bad CRC-32: the receiver drops this datagram",
        expert.group.CHECKSUM, expert.severity.ERROR),
    bad_type = ProtoExpert.new("efa_emu.type.unknown", "Unknown packet type",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_length = ProtoExpert.new("efa_emu.length.bad",
        "hdr_len + payload_len differs from the datagram length",
        expert.group.MALFORMED, expert.severity.ERROR),
    short_ext = ProtoExpert.new("efa_emu.hdr_len.short", "hdr_len too short for this packet type",
        expert.group.MALFORMED, expert.severity.ERROR),
    rnr = ProtoExpert.new("efa_emu.srd.rnr", "Receiver not ready: the sender will retry",
        expert.group.SEQUENCE, expert.severity.NOTE),
    nak_final = ProtoExpert.new("efa_emu.srd.nak_final", "Final NAK: the send completes with this error",
        expert.group.RESPONSE_CODE, expert.severity.WARN),
    write_imm = ProtoExpert.new("efa_emu.rdma.write_imm_final",
        "Final packet of an RDMA write with immediate: the target completes the write on it",
        expert.group.SEQUENCE, expert.severity.CHAT),
}
-- A malformed bundle is dropped whole by the receiver (rx_drop_bad_bundle): its lengths
-- cannot be trusted to find any packet, so the messages say so.
ex.bundle_len = ProtoExpert.new("efa_emu.bundle.len.bad",
    "Bundle packet length runs past the end of the datagram: the receiver drops the whole bundle",
    expert.group.MALFORMED, expert.severity.ERROR)
ex.bundle_count = ProtoExpert.new("efa_emu.bundle.count.bad",
    "Bundle count differs from the packets the datagram holds: the receiver drops the whole bundle",
    expert.group.MALFORMED, expert.severity.ERROR)
ex.bundle_trailing = ProtoExpert.new("efa_emu.bundle.trailing.bad",
    "Bytes after the bundle's last packet: the receiver drops the whole bundle",
    expert.group.MALFORMED, expert.severity.ERROR)
ex.bundle_not_packet = ProtoExpert.new("efa_emu.bundle.not_packet",
    "Bundled bytes that are not an efa-emu packet: the receiver drops them",
    expert.group.MALFORMED, expert.severity.ERROR)
efa.experts = { ex.bad_crc, ex.bad_type, ex.bad_length, ex.short_ext, ex.rnr, ex.nak_final, ex.write_imm,
    ex.bundle_len, ex.bundle_count, ex.bundle_trailing, ex.bundle_not_packet }

efa.prefs.udp_port = Pref.uint("UDP port", 0,
    "Always decode this UDP port as efa-emu (0: none; the heuristic finds the traffic anyway)")
efa.prefs.verify_crc = Pref.bool("Verify CRC-32", true,
    "Check each datagram's CRC-32 as the receiving device does (costs time on large captures)")
efa.prefs.decode_rdm = Pref.bool("Decode RDM packets", true,
    "Decode an SRD send's payload as an EFA RDM protocol v4 packet when it looks like one (see rdm_layout)")

---------------------------------------------------------------------------------------------
-- CRC-32 (IEEE, reflected, as zlib computes it), for marking corrupted datagrams the way the
-- emulator's receiver sees them (its fault injector can flip bits on purpose).

local band, bxor, rshift
if bit32 then
    band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift
elseif bit then
    band, bxor, rshift = bit.band, bit.bxor, bit.rshift
else
    -- Lua 5.3+ without a bit library: native operators, compiled at run time so that older
    -- Lua versions never have to parse them.
    band = load("return function(a, b) return a & b end")()
    bxor = load("return function(a, b) return a ~ b end")()
    rshift = load("return function(a, n) return (a & 0xffffffff) >> n end")()
end

local TWO32 = 4294967296
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) == 1 then c = bxor(rshift(c, 1), 0xEDB88320) else c = rshift(c, 1) end
    end
    crc_table[i] = c
end

-- CRC-32 of the datagram bytes `s` (a Lua string) with bytes 36..39 (the crc field) as zero.
local function efa_crc32(s)
    local crc = 0xFFFFFFFF
    local n = #s
    local pos = 1
    while pos <= n do
        local last = pos + 255
        if last > n then last = n end
        local bytes = { string.byte(s, pos, last) }
        for k = 1, #bytes do
            local b = bytes[k]
            local off = pos + k - 2 -- zero-based offset of this byte
            if off >= 36 and off <= 39 then b = 0 end
            crc = bxor(rshift(crc, 8), crc_table[band(bxor(crc, b), 0xFF)])
        end
        pos = last + 1
    end
    return bxor(crc, 0xFFFFFFFF) % TWO32
end

---------------------------------------------------------------------------------------------
-- Dissection.

local data_dissector = Dissector.get("data")

-- "14-15,17" from a sorted list of PSNs.
local function ranges_of(psns)
    local parts = {}
    local i = 1
    while i <= #psns do
        local j = i
        while j < #psns and psns[j + 1] == (psns[j] + 1) % TWO32 do j = j + 1 end
        if j == i then
            parts[#parts + 1] = tostring(psns[i])
        else
            parts[#parts + 1] = psns[i] .. "-" .. psns[j]
        end
        i = j + 1
    end
    return table.concat(parts, ",")
end

-- Dissects the SRD extension (bytes 40 .. hdr_len; for the RDMA types their SRD data part,
-- bytes 40 .. 72) into its own subtree; returns a short summary for the Info column, e.g.
-- "psn=12". A capture with a small snaplen may hold only part of the extension: the fields
-- that were captured are shown, the others left out.
local function dissect_srd(tvb, root, ptype, hdr_len, version)
    local caplen = tvb:len()
    local ack_len = version == WIRE_VERSION_1 and SRD_ACK_V1_HDR_LEN or SRD_ACK_HDR_LEN
    local need
    if ptype == SRD_ACK then
        need = ack_len
    elseif ptype == SRD_DATA then
        need = SRD_DATA_MIN_LEN
    elseif is_rdma(ptype) then
        -- The RDMA types were born with the whole 72-byte SRD_DATA header.
        need = SRD_DATA_HDR_LEN
    else
        need = SRD_NAK_HDR_LEN
    end
    local ext_end = math.min(hdr_len, caplen)
    -- An RDMA packet's SRD part ends where its RDMA extension (dissect_rdma) starts.
    if is_rdma(ptype) then ext_end = math.min(ext_end, SRD_DATA_HDR_LEN) end
    -- A subtree of the protocol item, not a second protocol item: the frame holds one PDU.
    local srd = root:add(tvb(BASE_HEADER_LEN, ext_end - BASE_HEADER_LEN),
        "SRD " .. (is_rdma(ptype) and "DATA" or type_names[ptype]:sub(5)) .. " extension")
    if hdr_len < need then
        srd:add_proto_expert_info(ex.short_ext, "hdr_len " .. hdr_len .. " < " .. need)
        return ""
    end
    if caplen < need then srd:append_text(" [cut short by the capture's snaplen]") end
    local function fits(off, len) return off + len <= caplen end
    local function add(field, off, len)
        if fits(off, len) then srd:add(field, tvb(off, len)) end
    end
    local function u32(off) return fits(off, 4) and tvb(off, 4):uint() or nil end

    add(f.session, 40, 4)
    local known, summary = need, ""
    if is_srd_data(ptype) then
        local psn = u32(44)
        add(f.psn, 44, 4)
        add(f.window_start, 48, 4)
        add(f.tx_time, 52, 4)
        if hdr_len >= SRD_DATA_INCARN_LEN then
            add(f.dest_incarnation, 56, 4)
            known = SRD_DATA_INCARN_LEN
        end
        if psn then
            srd:append_text(", PSN " .. psn)
            summary = "psn=" .. psn
        end
        if hdr_len >= SRD_DATA_HDR_LEN then
            known = SRD_DATA_HDR_LEN
            -- An ack of the reverse direction riding on this data packet (session 0: none).
            local pb_session = u32(60)
            if pb_session and fits(60, 12) then
                local pb = srd:add(tvb(60, 12), "Piggybacked ack")
                pb:add(f.pb_session, tvb(60, 4))
                pb:add(f.pb_cum_ack, tvb(64, 4))
                pb:add(f.pb_echo_time, tvb(68, 4))
                if pb_session == 0 then
                    pb:append_text(": none")
                else
                    local cum = tvb(64, 4):uint()
                    pb:append_text(", cum_ack " .. cum)
                    summary = summary .. " ack=" .. cum
                end
            end
        end
    elseif ptype == SRD_ACK then
        local cum = u32(44)
        add(f.cum_ack, 44, 4)
        add(f.echo_time, 48, 4)
        add(f.incarnation, 52, 4)
        -- Version 2 anchors the map at sack_base; version 1 at cum_ack + 1.
        local map_off, sack_base = 56, cum and (cum + 1) % TWO32
        if version ~= WIRE_VERSION_1 then
            sack_base = u32(56)
            add(f.sack_base, 56, 4)
            map_off = 60
        end
        known = map_off + SACK_BITS / 8
        if cum and sack_base and fits(map_off, SACK_BITS / 8) then
            local sack_item = srd:add(f.sack, tvb(map_off, SACK_BITS / 8))
            local psns = {}
            for i = 0, SACK_BITS - 1 do
                local byte = tvb(map_off + math.floor(i / 8), 1):uint()
                if band(byte, rshift(0x80, i % 8)) ~= 0 then
                    psns[#psns + 1] = (sack_base + i) % TWO32
                end
            end
            sack_item:add(f.sack_count, tvb(map_off, SACK_BITS / 8), #psns):set_generated()
            if #psns > 0 then
                local ranges = ranges_of(psns)
                sack_item:add(f.sack_ranges, tvb(map_off, SACK_BITS / 8), ranges):set_generated()
                for _, p in ipairs(psns) do
                    local i = (p - sack_base) % TWO32
                    sack_item:add(f.sacked_psn, tvb(map_off + math.floor(i / 8), 1), p):set_generated()
                end
                sack_item:append_text(" (" .. ranges .. ")")
            end
            srd:append_text(", cum_ack " .. cum .. ", " .. #psns .. " SACKed")
            summary = "cum_ack=" .. cum .. " sacked=" .. #psns
        elseif cum then
            srd:append_text(", cum_ack " .. cum)
            summary = "cum_ack=" .. cum
        end
    else -- SRD_NAK
        local psn = u32(44)
        add(f.psn, 44, 4)
        if fits(48, 1) then
            local status = tvb(48, 1):uint()
            local name = efa_status_names[status] or ("UNKNOWN_STATUS_" .. status)
            local st = srd:add(f.nak_status, tvb(48, 1))
            st:add_proto_expert_info(status == 10 and ex.rnr or ex.nak_final)
            srd:append_text(", PSN " .. psn .. ", " .. name)
            summary = "psn=" .. psn .. " status=" .. name
        elseif psn then
            summary = "psn=" .. psn
        end
        add(f.reserved, 49, 3)
        add(f.echo_time, 52, 4)
    end
    -- A newer emulator may extend the header: show the bytes rather than misread them.
    if ext_end > known then srd:add(f.ext_unknown, tvb(known, ext_end - known)) end
    return summary
end

-- "0x1000" for the 64-bit address at `off` (the emulator keeps addresses below 2^53, but any
-- value prints right: the halves are formatted separately).
local function addr_hex(tvb, off)
    local hi, lo = tvb(off, 4):uint(), tvb(off + 4, 4):uint()
    if hi == 0 then return string.format("0x%x", lo) end
    return string.format("0x%x%08x", hi, lo)
end

-- Dissects the RDMA extension of SRD_RDMA_WRITE / SRD_READ_REQ / SRD_READ_RESP (bytes 72 .. 92,
-- after the SRD data part) into an "RDMA" subtree; returns a summary for the Info column, e.g.
-- "addr=0x1000 len=4096 rkey=0x00c0de01". Called once dissect_srd has shown bytes 40 .. 72.
local function dissect_rdma(tvb, root, ptype, hdr_len, payload_len)
    local caplen = tvb:len()
    local start = SRD_DATA_HDR_LEN
    if hdr_len < RDMA_HDR_LEN then
        -- Below 72, dissect_srd has flagged it already.
        if hdr_len >= SRD_DATA_HDR_LEN then
            root:add_proto_expert_info(ex.short_ext,
                "hdr_len " .. hdr_len .. " < " .. RDMA_HDR_LEN .. ": no room for the RDMA extension")
        end
        return ""
    end
    local ext_end = math.min(hdr_len, caplen)
    -- Nothing of it captured (small snaplen): the SRD subtree already says it was cut short.
    if ext_end <= start then return "" end
    local rdma = root:add(tvb(start, ext_end - start), "RDMA")
    if caplen < RDMA_HDR_LEN then rdma:append_text(" [cut short by the capture's snaplen]") end
    local function fits(off, len) return off + len <= caplen end
    local function add(field, off, len)
        if fits(off, len) then return rdma:add(field, tvb(off, len)) end
        return nil
    end

    local rkey = fits(72, 4) and tvb(72, 4):uint() or nil
    local addr = fits(76, 8) and addr_hex(tvb, 76) or nil
    local length = fits(84, 4) and tvb(84, 4):uint() or nil
    local op_id = fits(88, 4) and tvb(88, 4):uint() or nil
    local rkey_item = add(f.rkey, 72, 4)
    local addr_item = add(f.addr, 76, 8)
    local length_item = add(f.rdma_length, 84, 4)
    local op_item = add(f.op_id, 88, 4)

    local parts = {}
    local function part(name, v)
        if v ~= nil then parts[#parts + 1] = name .. "=" .. v end
    end
    local rkey_text = rkey and string.format("0x%08x", rkey)
    local offset_desc
    if ptype == SRD_RDMA_WRITE then
        rdma:append_text(" write")
        if addr_item then addr_item:append_text(" (this payload's offset in the remote MR)") end
        if length_item then length_item:append_text(" (bytes of the whole write)") end
        if op_item then op_item:append_text(" (unused in writes)") end
        part("addr", addr)
        part("len", length)
        part("rkey", rkey_text)
        offset_desc = addr and ("remote MR offset " .. addr)
    elseif ptype == SRD_READ_REQ then
        rdma:append_text(" read request")
        if addr_item then addr_item:append_text(" (where the read starts in the remote MR)") end
        if length_item then length_item:append_text(" (bytes to read)") end
        part("op_id", op_id)
        part("addr", addr)
        part("len", length)
        part("rkey", rkey_text)
    else -- SRD_READ_RESP
        rdma:append_text(" read response")
        if rkey_item then rkey_item:append_text(" (unused in read responses)") end
        -- The address field is the payload's offset within the read: show it as one.
        local off = fits(76, 8) and tvb(76, 8):uint64() or nil
        if addr_item then addr_item:append_text(" (offset of this payload within the read)") end
        if length_item then length_item:append_text(" (bytes of the whole read)") end
        part("op_id", op_id)
        part("off", off and tostring(off))
        part("len", length)
        offset_desc = off and ("read offset " .. tostring(off))
    end
    if #parts > 0 then rdma:append_text(": " .. table.concat(parts, ", ")) end

    -- The payload itself goes to the data dissector; here, where it lands.
    if payload_len > 0 and caplen > hdr_len then
        local text = "Payload: " .. payload_len .. " bytes"
        if offset_desc then text = text .. " at " .. offset_desc end
        rdma:add(tvb(hdr_len, caplen - hdr_len), text)
    end
    -- A newer emulator may extend the header: show the bytes rather than misread them.
    if ext_end > RDMA_HDR_LEN then rdma:add(f.ext_unknown, tvb(RDMA_HDR_LEN, ext_end - RDMA_HDR_LEN)) end
    return table.concat(parts, " ")
end

---------------------------------------------------------------------------------------------
-- EFA RDM protocol v4: what an RDM endpoint (src/rdm) sends inside one SRD send. The layouts
-- are libfabric's efa provider protocol v4, as src/rdm/rdm-wire.ts encodes them: a 4-byte base
-- header (type u8, version u8 = 4, flags u16), then per type; multi-byte fields little endian.

local rdm = Proto("efa_rdm", "EFA RDM protocol v4")

local RDM_VERSION = 4
local RDM_CTS, RDM_CTSDATA, RDM_EOR, RDM_HANDSHAKE, RDM_PEER_ERROR = 3, 4, 7, 9, 12
local RDM_EAGER_MSGRTM, RDM_EAGER_TAGRTM = 64, 65
local RDM_MEDIUM_MSGRTM, RDM_MEDIUM_TAGRTM = 66, 67
local RDM_LONGCTS_MSGRTM, RDM_LONGCTS_TAGRTM = 68, 69
local RDM_LONGREAD_MSGRTM, RDM_LONGREAD_TAGRTM = 128, 129
-- The types this dissector decodes (the ones src/rdm sends); any other type is not taken as RDM.
local rdm_type_names = {
    [RDM_CTS] = "CTS",
    [RDM_CTSDATA] = "CTSDATA",
    [RDM_EOR] = "EOR",
    [RDM_HANDSHAKE] = "HANDSHAKE",
    [RDM_PEER_ERROR] = "PEER_ERROR",
    [RDM_EAGER_MSGRTM] = "EAGER_MSGRTM",
    [RDM_EAGER_TAGRTM] = "EAGER_TAGRTM",
    [RDM_MEDIUM_MSGRTM] = "MEDIUM_MSGRTM",
    [RDM_MEDIUM_TAGRTM] = "MEDIUM_TAGRTM",
    [RDM_LONGCTS_MSGRTM] = "LONGCTS_MSGRTM",
    [RDM_LONGCTS_TAGRTM] = "LONGCTS_TAGRTM",
    [RDM_LONGREAD_MSGRTM] = "LONGREAD_MSGRTM",
    [RDM_LONGREAD_TAGRTM] = "LONGREAD_TAGRTM",
}
-- PEER_ERROR's ref_kind: what op_id names (a send of the receiver's peer, or a message id).
local rdm_peer_error_refs = {
    [0] = "OPE_INDEX",
    [1] = "MSG_ID",
}
-- REQ types: fixed header bytes before the optional headers (reqHeaderLen less the optional
-- parts), the protocol a message of that type takes (named as the endpoint's counters name
-- it), and whether it is tagged.
local rdm_req_base = {
    [RDM_EAGER_MSGRTM] = 8, [RDM_EAGER_TAGRTM] = 16,
    [RDM_MEDIUM_MSGRTM] = 24, [RDM_MEDIUM_TAGRTM] = 32,
    [RDM_LONGCTS_MSGRTM] = 24, [RDM_LONGCTS_TAGRTM] = 32,
    [RDM_LONGREAD_MSGRTM] = 24, [RDM_LONGREAD_TAGRTM] = 32,
}
local rdm_protocol_of = {
    [RDM_EAGER_MSGRTM] = "eager", [RDM_EAGER_TAGRTM] = "eager",
    [RDM_MEDIUM_MSGRTM] = "medium", [RDM_MEDIUM_TAGRTM] = "medium",
    [RDM_LONGCTS_MSGRTM] = "longcts", [RDM_LONGCTS_TAGRTM] = "longcts",
    [RDM_LONGREAD_MSGRTM] = "longread", [RDM_LONGREAD_TAGRTM] = "longread",
}
local rdm_tagged = { [RDM_EAGER_TAGRTM] = true, [RDM_MEDIUM_TAGRTM] = true, [RDM_LONGCTS_TAGRTM] = true, [RDM_LONGREAD_TAGRTM] = true }

-- Flags. CONNID_HDR (bit 15) belongs to every type; the others to a type or family.
local PKT_CONNID_HDR = 0x8000
local REQ_RAW_ADDR_HDR, REQ_CQ_DATA_HDR, REQ_MSG, REQ_TAGGED = 0x0001, 0x0002, 0x0004, 0x0008
-- Set by the provider on a long-CTS REQ that its receiver may answer with READ_NACK.
local REQ_READ_NACK = 0x2000
local REQ_KNOWN_FLAGS = REQ_RAW_ADDR_HDR + REQ_CQ_DATA_HDR + REQ_MSG + REQ_TAGGED + REQ_READ_NACK + PKT_CONNID_HDR
local CTS_READ_REQ = 0x0080
local HS_HOST_ID_HDR, HS_DEVICE_VERSION_HDR, HS_USER_RECV_QP_HDR, HS_HMEM_P2P_HDR = 0x0001, 0x0002, 0x0004, 0x0008
local HS_KNOWN_FLAGS = HS_HOST_ID_HDR + HS_DEVICE_VERSION_HDR + HS_USER_RECV_QP_HDR + HS_HMEM_P2P_HDR + PKT_CONNID_HDR

-- Sizes (rdm-wire.ts): the raw-address header is a u32 length (36) then the 32-byte address
-- padded to 40 bytes; CQ data 8, connid 4; one read IOV (addr, len, key: u64 each) 24.
local RDM_RAW_ADDR_HDR_LEN, RDM_RAW_ADDR_FIELD_LEN, RDM_RAW_ADDR_LEN = 40, 36, 32
local RDM_CQ_DATA_HDR_LEN, RDM_CONNID_HDR_LEN, RDM_RMA_IOV_LEN = 8, 4, 24
local RDM_CTS_LEN, RDM_EOR_LEN, RDM_PEER_ERROR_LEN = 24, 16, 20
-- CTSDATA: 24 bytes, then connid u32 and padding when CONNID_HDR is set.
local RDM_CTSDATA_HDR_LEN, RDM_CTSDATA_NO_CONNID_LEN = 32, 24
-- The provider reads at most this many IOVs of one long-read message (its IOV limit).
local RDM_MAX_READ_IOVS = 4
-- nextra_p3 is the number of extra-info words plus 3; the receiver takes at most 256 words.
local RDM_MAX_EXTRA_WORDS = 256

-- Handshake extra features and requests (bit i of extra_info word 0), in bit order.
local rdm_features = {
    { 0x001, "RDMA_READ", "rdma_read" },
    { 0x002, "DELIVERY_COMPLETE", "delivery_complete" },
    { 0x004, "CONSTANT_HEADER_LENGTH", "constant_header_length" },
    { 0x008, "CONNID_HEADER", "connid_header" },
    { 0x010, "RUNT", "runt" },
    { 0x020, "RDMA_WRITE", "rdma_write" },
    { 0x040, "READ_NACK", "read_nack" },
    { 0x080, "REQUEST_USER_RECV_QP", "request_user_recv_qp" },
    { 0x100, "UNSOLICITED_WRITE_RECV", "unsolicited_write_recv" },
    { 0x200, "PEER_ERROR", "peer_error" },
}

local function flag_field(abbr, name, mask, set, clear)
    return ProtoField.bool("efa_rdm.flags." .. abbr, name, 16, { set, clear }, mask)
end

local rf = {
    type = ProtoField.uint8("efa_rdm.type", "Packet type", base.DEC, rdm_type_names),
    version = ProtoField.uint8("efa_rdm.version", "Protocol version", base.DEC),
    flags = ProtoField.uint16("efa_rdm.flags", "Flags", base.HEX),
    f_raw_addr = flag_field("raw_addr_hdr", "RAW_ADDR_HDR", REQ_RAW_ADDR_HDR, "Raw address header present", "No raw address header"),
    f_cq_data = flag_field("cq_data_hdr", "CQ_DATA_HDR", REQ_CQ_DATA_HDR, "Remote CQ data present", "No remote CQ data"),
    f_msg = flag_field("msg", "MSG", REQ_MSG, "Untagged message", "Not an untagged message"),
    f_tagged = flag_field("tagged", "TAGGED", REQ_TAGGED, "Tagged message", "Not a tagged message"),
    f_read_nack = flag_field("read_nack", "READ_NACK", REQ_READ_NACK, "Receiver may answer READ_NACK", "No READ_NACK"),
    f_read_req = flag_field("read_req", "READ_REQ", CTS_READ_REQ, "CTS of an emulated read", "CTS of a message"),
    f_host_id = flag_field("host_id_hdr", "HOST_ID_HDR", HS_HOST_ID_HDR, "Host id present", "No host id"),
    f_device_version = flag_field("device_version_hdr", "DEVICE_VERSION_HDR", HS_DEVICE_VERSION_HDR, "Device version present", "No device version"),
    f_user_recv_qp = flag_field("user_recv_qp_hdr", "USER_RECV_QP_HDR", HS_USER_RECV_QP_HDR, "User receive QP present", "No user receive QP"),
    f_hmem_p2p = flag_field("hmem_p2p_hdr", "HMEM_P2P_HDR", HS_HMEM_P2P_HDR, "P2P support present", "No P2P support field"),
    f_connid = flag_field("connid_hdr", "CONNID_HDR", PKT_CONNID_HDR, "Connection id present", "No connection id"),

    msg_id = ProtoField.uint32("efa_rdm.msg_id", "Message id", base.DEC),
    tag = ProtoField.uint64("efa_rdm.tag", "Tag", base.HEX),
    msg_length = ProtoField.uint64("efa_rdm.msg_length", "Message length", base.DEC),
    seg_offset = ProtoField.uint64("efa_rdm.seg_offset", "Segment offset", base.DEC),
    seg_length = ProtoField.uint64("efa_rdm.seg_length", "Segment length", base.DEC),
    send_id = ProtoField.uint32("efa_rdm.send_id", "Send id", base.DEC),
    recv_id = ProtoField.uint32("efa_rdm.recv_id", "Receive id", base.DEC),
    credit_request = ProtoField.uint32("efa_rdm.credit_request", "Credit request (packets per CTS)", base.DEC),
    read_iov_count = ProtoField.uint32("efa_rdm.read_iov_count", "Read IOV count", base.DEC),
    recv_length = ProtoField.uint64("efa_rdm.recv_length", "Receive length (bytes granted)", base.DEC),
    op_id = ProtoField.uint32("efa_rdm.peer_error.op_id", "Operation or message id", base.DEC),
    ref_kind = ProtoField.uint32("efa_rdm.peer_error.ref_kind", "Refers to", base.DEC, rdm_peer_error_refs),
    prov_errno = ProtoField.uint32("efa_rdm.peer_error.prov_errno", "Provider errno (EFA status)", base.DEC),

    raw_addr = ProtoField.bytes("efa_rdm.raw_addr", "Raw address (efa_ep_addr)"),
    raw_addr_len = ProtoField.uint32("efa_rdm.raw_addr.len", "Address length", base.DEC),
    raw_gid = ProtoField.ipv6("efa_rdm.raw_addr.gid", "GID"),
    raw_qpn = ProtoField.uint16("efa_rdm.raw_addr.qpn", "QPN", base.DEC),
    raw_connid = ProtoField.uint32("efa_rdm.raw_addr.connid", "Connection id (qkey)", base.HEX),
    cq_data = ProtoField.uint64("efa_rdm.cq_data", "Remote CQ data", base.HEX),
    connid = ProtoField.uint32("efa_rdm.connid", "Connection id", base.HEX),
    iov_addr = ProtoField.uint64("efa_rdm.read_iov.addr", "Address", base.HEX),
    iov_len = ProtoField.uint64("efa_rdm.read_iov.len", "Length", base.DEC),
    iov_key = ProtoField.uint64("efa_rdm.read_iov.key", "Key (rkey)", base.HEX),

    nextra_p3 = ProtoField.uint32("efa_rdm.handshake.nextra_p3", "Extra-info words + 3", base.DEC),
    extra_info = ProtoField.uint64("efa_rdm.handshake.extra_info", "Extra info", base.HEX),
    features = ProtoField.string("efa_rdm.handshake.features", "Features"),
    host_id = ProtoField.uint64("efa_rdm.handshake.host_id", "Host id", base.HEX),
    device_version = ProtoField.uint32("efa_rdm.handshake.device_version", "Device version (PCI device id)", base.HEX),
    user_qpn = ProtoField.uint32("efa_rdm.handshake.user_recv_qp.qpn", "User receive QPN", base.DEC),
    user_qkey = ProtoField.uint32("efa_rdm.handshake.user_recv_qp.qkey", "User receive Q_Key", base.HEX),
    p2p = ProtoField.uint8("efa_rdm.handshake.p2p_supported", "P2P supported", base.DEC),

    reserved = ProtoField.bytes("efa_rdm.reserved", "Padding"),
    protocol = ProtoField.string("efa_rdm.protocol", "Protocol"),
    payload_len = ProtoField.uint32("efa_rdm.payload_len", "Payload length", base.DEC),
}
local rdm_feature_fields = {}
for _, feat in ipairs(rdm_features) do
    local field = ProtoField.bool("efa_rdm.handshake.feature." .. feat[3], feat[2], 32, { "Yes", "No" }, feat[1])
    rdm_feature_fields[#rdm_feature_fields + 1] = field
    rf["feat_" .. feat[3]] = field
end
local rdm_field_list = {}
for _, field in pairs(rf) do rdm_field_list[#rdm_field_list + 1] = field end
rdm.fields = rdm_field_list

local function has(flags, bit) return band(flags, bit) ~= 0 end

-- A u64 at `off` (little endian) as a Lua number: exact below 2^53, which every length and
-- offset of the emulator is.
local function le_u64n(tvb, off)
    return tvb(off + 4, 4):le_uint() * TWO32 + tvb(off, 4):le_uint()
end

-- "0x2a" for the little-endian u64 at `off`.
local function le_hex64(tvb, off)
    local lo, hi = tvb(off, 4):le_uint(), tvb(off + 4, 4):le_uint()
    if hi == 0 then return string.format("0x%x", lo) end
    return string.format("0x%x%08x", hi, lo)
end

-- "RDMA_READ|CONNID_HEADER" for the feature bits of `word` (unknown bits as hex; "none").
local function feature_names(word)
    local names, rest = {}, word
    for _, feat in ipairs(rdm_features) do
        if has(word, feat[1]) then
            names[#names + 1] = feat[2]
            rest = rest - feat[1]
        end
    end
    if rest ~= 0 then names[#names + 1] = string.format("0x%x", rest) end
    return #names > 0 and table.concat(names, "|") or "none"
end

-- The RDM heuristic. An SRD send's payload is the application's own bytes when the sender is
-- a plain verbs program, so "looks like RDM" has to be hard to hit by chance. The payload of
-- an SRD_DATA packet (`len` bytes on the wire) is taken as an RDM packet only when:
--   1. byte 1, the version, is 4, and byte 0 a type named in rdm_type_names (13 of 256);
--   2. the flags have no bit outside those the type defines (REQ: RAW_ADDR_HDR, CQ_DATA_HDR,
--      MSG, TAGGED, READ_NACK, CONNID_HDR; CTS: CONNID_HDR, READ_REQ; CTSDATA, EOR and PEER_ERROR:
--      CONNID_HDR; HANDSHAKE: CONNID_HDR and its four optional-header flags); a REQ has
--      exactly the one of MSG and TAGGED its type says, and not both RAW_ADDR_HDR and CONNID_HDR
--      (its sender uses one or the other);
--   3. the length is the one the type's header implies: CTS exactly 24 bytes, EOR exactly 16;
--      CTSDATA its header plus seg_length; HANDSHAKE exactly 8 bytes plus its extra-info words
--      plus the optional headers its flags name, nextra_p3 in 3 .. 259; a REQ at least its
--      header and the optional headers its flags name, the raw-address header's length word
--      36, a medium segment within the message (seg_offset + payload <= msg_length), a long-CTS
--      first segment no longer than the message, a long-read REQ 1 .. 4 read IOVs and nothing
--      after them;
--   4. the header was captured whole (a snaplen that cuts it leaves the payload as data).
-- Random bytes pass 1 and 2 together with a probability of about 3 in 10^8 (the flag rules
-- leave 12 of 65536 flag values to an RTM type); the length rules cut that further. The
-- "Decode RDM" preference turns the whole thing off.
-- Returns nil, or the layout: {ptype, flags, len, hdr_len, payload and the optional headers'
-- offsets}.
local function rdm_layout(tvb, len)
    local caplen = tvb:len()
    if len < 4 or caplen < 4 or tvb(1, 1):uint() ~= RDM_VERSION then return nil end
    local ptype = tvb(0, 1):uint()
    if rdm_type_names[ptype] == nil then return nil end
    local flags = tvb(2, 2):le_uint()
    local function have(n) return n <= len and n <= caplen end
    local function only(known) return band(flags, known) == flags end
    local L = { ptype = ptype, flags = flags, len = len }
    local base = rdm_req_base[ptype]
    if base then
        if not only(REQ_KNOWN_FLAGS) then return nil end
        if band(flags, REQ_MSG + REQ_TAGGED) ~= (rdm_tagged[ptype] and REQ_TAGGED or REQ_MSG) then return nil end
        if has(flags, REQ_RAW_ADDR_HDR) and has(flags, PKT_CONNID_HDR) then return nil end
        if not have(base) then return nil end
        local off = base
        if has(flags, REQ_RAW_ADDR_HDR) then
            if not have(off + RDM_RAW_ADDR_HDR_LEN) or tvb(off, 4):le_uint() ~= RDM_RAW_ADDR_FIELD_LEN then return nil end
            L.raw_off = off
            off = off + RDM_RAW_ADDR_HDR_LEN
        end
        if has(flags, REQ_CQ_DATA_HDR) then
            if not have(off + RDM_CQ_DATA_HDR_LEN) then return nil end
            L.cq_off = off
            off = off + RDM_CQ_DATA_HDR_LEN
        end
        if has(flags, PKT_CONNID_HDR) then
            if not have(off + RDM_CONNID_HDR_LEN) then return nil end
            L.connid_off = off
            off = off + RDM_CONNID_HDR_LEN
        end
        local proto = rdm_protocol_of[ptype]
        if proto == "longread" then
            local n = tvb(20, 4):le_uint()
            if n < 1 or n > RDM_MAX_READ_IOVS then return nil end
            L.iov_off, L.iov_count = off, n
            off = off + n * RDM_RMA_IOV_LEN
            if not have(off) or len ~= off then return nil end
        end
        local payload = len - off
        if proto == "medium" and le_u64n(tvb, 16) + payload > le_u64n(tvb, 8) then return nil end
        if proto == "longcts" and payload > le_u64n(tvb, 8) then return nil end
        L.hdr_len = off
    elseif ptype == RDM_CTS then
        if not only(PKT_CONNID_HDR + CTS_READ_REQ) or len ~= RDM_CTS_LEN or not have(RDM_CTS_LEN) then return nil end
        L.hdr_len = RDM_CTS_LEN
    elseif ptype == RDM_CTSDATA then
        local hdr = has(flags, PKT_CONNID_HDR) and RDM_CTSDATA_HDR_LEN or RDM_CTSDATA_NO_CONNID_LEN
        if not only(PKT_CONNID_HDR) or not have(hdr) or le_u64n(tvb, 8) ~= len - hdr then return nil end
        L.hdr_len = hdr
    elseif ptype == RDM_EOR then
        if not only(PKT_CONNID_HDR) or len ~= RDM_EOR_LEN or not have(RDM_EOR_LEN) then return nil end
        L.hdr_len = RDM_EOR_LEN
    elseif ptype == RDM_PEER_ERROR then
        if not only(PKT_CONNID_HDR) or len ~= RDM_PEER_ERROR_LEN or not have(RDM_PEER_ERROR_LEN) then return nil end
        if rdm_peer_error_refs[tvb(8, 4):le_uint()] == nil then return nil end
        L.hdr_len = RDM_PEER_ERROR_LEN
    else -- RDM_HANDSHAKE
        if not only(HS_KNOWN_FLAGS) or not have(8) then return nil end
        local nextra_p3 = tvb(4, 4):le_uint()
        if nextra_p3 < 3 or nextra_p3 > 3 + RDM_MAX_EXTRA_WORDS then return nil end
        L.nextra = nextra_p3 - 3
        local off = 8 + L.nextra * 8
        -- The optional headers, 8 bytes each, in this order when their flags are set.
        for _, opt in ipairs({ { PKT_CONNID_HDR, "connid_off" }, { HS_HOST_ID_HDR, "host_id_off" },
            { HS_DEVICE_VERSION_HDR, "device_version_off" }, { HS_USER_RECV_QP_HDR, "user_qp_off" },
            { HS_HMEM_P2P_HDR, "p2p_off" } }) do
            if has(flags, opt[1]) then
                L[opt[2]] = off
                off = off + 8
            end
        end
        if len ~= off or not have(off) then return nil end
        L.hdr_len = off
    end
    L.payload = len - L.hdr_len
    return L
end

-- Adds the "EFA RDM protocol v4" tree of the RDM packet `tvb` (an SRD_DATA payload, laid out
-- by rdm_layout) and hands its payload to the data dissector; returns the Info column's text,
-- e.g. "RDM MEDIUM_TAGRTM msg_id=5 seg 8160/65536 tag=0x2a (medium)".
local function dissect_rdm(tvb, pinfo, tree, L)
    local caplen = tvb:len()
    local ptype, flags = L.ptype, L.flags
    local tname = rdm_type_names[ptype]
    local t = tree:add(rdm, tvb(0, L.hdr_len))
    local function add(field, off, n) return t:add_le(field, tvb(off, n)) end
    local function pad(off, n) t:add(rf.reserved, tvb(off, n)) end
    add(rf.type, 0, 1)
    add(rf.version, 1, 1)
    local fi = add(rf.flags, 2, 2)
    local proto = rdm_protocol_of[ptype]
    local info = { "RDM " .. tname }
    local function say(text) info[#info + 1] = text end
    local payload_desc

    if proto then
        for _, fl in ipairs({ rf.f_raw_addr, rf.f_cq_data, rf.f_msg, rf.f_tagged, rf.f_read_nack, rf.f_connid }) do
            fi:add_le(fl, tvb(2, 2))
        end
        local msg_id = tvb(4, 4):le_uint()
        add(rf.msg_id, 4, 4)
        say("msg_id=" .. msg_id)
        local tag_off
        if ptype == RDM_EAGER_TAGRTM then tag_off = 8 end
        if proto == "eager" then
            say("len=" .. L.payload)
            payload_desc = " (the whole message)"
        else
            local msg_length = le_u64n(tvb, 8)
            add(rf.msg_length, 8, 8)
            if proto == "medium" then
                local seg_offset = le_u64n(tvb, 16)
                add(rf.seg_offset, 16, 8)
                say("seg " .. seg_offset .. "/" .. msg_length)
                payload_desc = " at message offset " .. seg_offset
            else
                local send_id = tvb(16, 4):le_uint()
                add(rf.send_id, 16, 4)
                say("send_id=" .. send_id)
                say("msg_length=" .. msg_length)
                if proto == "longcts" then
                    add(rf.credit_request, 20, 4)
                    payload_desc = " at message offset 0"
                else
                    add(rf.read_iov_count, 20, 4)
                end
            end
            if rdm_tagged[ptype] then tag_off = 24 end
        end
        if tag_off then
            add(rf.tag, tag_off, 8)
            say("tag=" .. le_hex64(tvb, tag_off))
        end
        if L.raw_off then
            local off = L.raw_off
            local qpn, raw_connid = tvb(off + 20, 2):le_uint(), tvb(off + 24, 4):le_uint()
            local hdr = t:add(tvb(off, RDM_RAW_ADDR_HDR_LEN),
                string.format("Raw address header: QPN %d, connid 0x%08x (the receiver may not know the sender yet)", qpn, raw_connid))
            hdr:add_le(rf.raw_addr_len, tvb(off, 4))
            local ra = hdr:add(rf.raw_addr, tvb(off + 4, RDM_RAW_ADDR_LEN))
            ra:add(rf.raw_gid, tvb(off + 4, 16))
            ra:add_le(rf.raw_qpn, tvb(off + 20, 2))
            ra:add(rf.reserved, tvb(off + 22, 2))
            ra:add_le(rf.raw_connid, tvb(off + 24, 4))
            ra:add(rf.reserved, tvb(off + 28, 8))
            hdr:add(rf.reserved, tvb(off + 36, 4))
        end
        if L.cq_off then
            add(rf.cq_data, L.cq_off, 8)
            say("data=" .. le_hex64(tvb, L.cq_off))
        end
        if L.connid_off then add(rf.connid, L.connid_off, 4) end
        if L.iov_off then
            for i = 0, L.iov_count - 1 do
                local off = L.iov_off + i * RDM_RMA_IOV_LEN
                local iov = t:add(tvb(off, RDM_RMA_IOV_LEN), "Read IOV " .. i .. ": " .. le_u64n(tvb, off + 8) ..
                    " bytes at " .. le_hex64(tvb, off) .. ", key " .. le_hex64(tvb, off + 16))
                iov:add_le(rf.iov_addr, tvb(off, 8))
                iov:add_le(rf.iov_len, tvb(off + 8, 8))
                iov:add_le(rf.iov_key, tvb(off + 16, 8))
            end
        end
        t:add(rf.protocol, tvb(0, 1), proto):set_generated()
        say("(" .. proto .. ")")
    elseif ptype == RDM_CTS then
        fi:add_le(rf.f_read_req, tvb(2, 2))
        fi:add_le(rf.f_connid, tvb(2, 2))
        if has(flags, PKT_CONNID_HDR) then add(rf.connid, 4, 4) else pad(4, 4) end
        add(rf.send_id, 8, 4)
        add(rf.recv_id, 12, 4)
        add(rf.recv_length, 16, 8)
        say("send_id=" .. tvb(8, 4):le_uint())
        say("recv_id=" .. tvb(12, 4):le_uint())
        say("recv_length=" .. le_u64n(tvb, 16))
    elseif ptype == RDM_CTSDATA then
        fi:add_le(rf.f_connid, tvb(2, 2))
        add(rf.recv_id, 4, 4)
        add(rf.seg_length, 8, 8)
        add(rf.seg_offset, 16, 8)
        if has(flags, PKT_CONNID_HDR) then
            add(rf.connid, 24, 4)
            pad(28, 4)
        end
        local seg_offset = le_u64n(tvb, 16)
        say("recv_id=" .. tvb(4, 4):le_uint())
        say("seg_offset=" .. seg_offset)
        say("seg_length=" .. le_u64n(tvb, 8))
        payload_desc = " at message offset " .. seg_offset
    elseif ptype == RDM_EOR then
        fi:add_le(rf.f_connid, tvb(2, 2))
        add(rf.send_id, 4, 4)
        add(rf.recv_id, 8, 4)
        if has(flags, PKT_CONNID_HDR) then add(rf.connid, 12, 4) else pad(12, 4) end
        say("send_id=" .. tvb(4, 4):le_uint())
        say("recv_id=" .. tvb(8, 4):le_uint())
    elseif ptype == RDM_PEER_ERROR then
        fi:add_le(rf.f_connid, tvb(2, 2))
        add(rf.op_id, 4, 4)
        add(rf.ref_kind, 8, 4)
        add(rf.prov_errno, 12, 4)
        if has(flags, PKT_CONNID_HDR) then add(rf.connid, 16, 4) else pad(16, 4) end
        say(string.lower(rdm_peer_error_refs[tvb(8, 4):le_uint()]) .. "=" .. tvb(4, 4):le_uint())
        say("prov_errno=" .. tvb(12, 4):le_uint())
    else -- RDM_HANDSHAKE
        for _, fl in ipairs({ rf.f_host_id, rf.f_device_version, rf.f_user_recv_qp, rf.f_hmem_p2p, rf.f_connid }) do
            fi:add_le(fl, tvb(2, 2))
        end
        add(rf.nextra_p3, 4, 4)
        local features = "none"
        for i = 0, L.nextra - 1 do
            local off = 8 + i * 8
            local word = add(rf.extra_info, off, 8)
            if i == 0 then
                -- Every feature bit defined so far lies in the low half of the first word.
                features = feature_names(tvb(off, 4):le_uint())
                if tvb(off + 4, 4):le_uint() ~= 0 then features = features .. "|" .. string.format("0x%x<<32", tvb(off + 4, 4):le_uint()) end
                word:add(rf.features, tvb(off, 8), features):set_generated()
                for _, field in ipairs(rdm_feature_fields) do word:add_le(field, tvb(off, 4)) end
            end
        end
        if L.connid_off then
            add(rf.connid, L.connid_off, 4)
            pad(L.connid_off + 4, 4)
        end
        if L.host_id_off then add(rf.host_id, L.host_id_off, 8) end
        if L.device_version_off then
            add(rf.device_version, L.device_version_off, 4)
            pad(L.device_version_off + 4, 4)
        end
        if L.user_qp_off then
            add(rf.user_qpn, L.user_qp_off, 4)
            add(rf.user_qkey, L.user_qp_off + 4, 4)
        end
        if L.p2p_off then
            add(rf.p2p, L.p2p_off, 1)
            pad(L.p2p_off + 1, 7)
        end
        say("features=" .. features)
    end

    t:add(rf.payload_len, tvb(0, 1), L.payload):set_generated()
    local summary = table.concat(info, " ")
    t:append_text(", " .. summary:sub(5))
    if L.payload > 0 and caplen > L.hdr_len then
        local text = "Payload: " .. L.payload .. " bytes"
        if payload_desc then text = text .. payload_desc end
        t:add(tvb(L.hdr_len, caplen - L.hdr_len), text)
        data_dissector:call(tvb(L.hdr_len):tvb(), pinfo, tree)
    end
    return summary
end

-- The RDM dissector is called through its handle, so that efa_rdm is a layer of the frame
-- (frame.protocols, the "efa_rdm" filter). What dissect found goes along here: the layout,
-- computed from the wire length that the payload's sub-tvb no longer knows when a snaplen cut
-- it; the Info text comes back the same way.
local rdm_call = { layout = nil, summary = nil }
rdm.dissector = function(tvb, pinfo, tree)
    local layout = rdm_call.layout or rdm_layout(tvb, tvb:reported_len())
    rdm_call.layout = nil
    if layout == nil then return 0 end
    rdm_call.summary = dissect_rdm(tvb, pinfo, tree, layout)
    return tvb:len()
end
local rdm_handle = rdm.dissector

-- Dissects one efa-emu packet `tvb` (magic checked by the caller) whose length on the wire is
-- `wire_len`, adding its items to `tree`; returns its Info text and the Protocol column's.
-- The columns are left to the caller: a bundle's Info lists several packets. `wire_len` is
-- passed rather than read from the tvb because a sub-tvb of a bundle cut by the snaplen
-- reports only the bytes captured.
local function dissect_packet(tvb, pinfo, tree, wire_len)
    local caplen = tvb:len()
    -- The item spans the whole header, extension included (hdr_len is checked below).
    local hdr_span = BASE_HEADER_LEN
    if caplen >= 6 and tvb(5, 1):uint() > BASE_HEADER_LEN then hdr_span = tvb(5, 1):uint() end
    local root = tree:add(efa, tvb(0, math.min(caplen, hdr_span)))
    root:add(f.magic, tvb(0, 2))
    root:add(f.version, tvb(2, 1))
    local version = tvb(2, 1):uint()
    local ptype = tvb(3, 1):uint()
    local type_item = root:add(f.type, tvb(3, 1))
    local tname = type_names[ptype] or ("TYPE_" .. ptype)
    if caplen < BASE_HEADER_LEN then
        -- A snaplen shorter than the header: show what there is.
        return tname .. " [truncated]", "EFA-EMU"
    end
    local flags = tvb(4, 1):uint()
    local flags_item = root:add(f.flags, tvb(4, 1))
    flags_item:add(f.has_imm, tvb(4, 1))
    -- Version 1 had no path: its bit 1 was RNR_LAST and the bits above it zero.
    local path = 0
    local set = {}
    if band(flags, FLAG_HAS_IMM) ~= 0 then set[#set + 1] = "HAS_IMM" end
    if version == WIRE_VERSION_1 then
        flags_item:add(f.rnr_last, tvb(4, 1))
        if band(flags, FLAG_RNR_LAST_V1) ~= 0 then set[#set + 1] = "RNR_LAST" end
    else
        path = rshift(band(flags, FLAG_PATH_MASK), FLAG_PATH_SHIFT)
        flags_item:add(f.path, tvb(4, 1))
        if path ~= 0 then set[#set + 1] = "path " .. path end
    end
    if #set > 0 then flags_item:append_text(" (" .. table.concat(set, ", ") .. ")") end
    local hdr_len = tvb(5, 1):uint()
    root:add(f.hdr_len, tvb(5, 1))
    local src_qpn = tvb(6, 2):uint()
    local dst_qpn = tvb(8, 2):uint()
    root:add(f.src_qpn, tvb(6, 2))
    root:add(f.dst_qpn, tvb(8, 2))
    local payload_len = tvb(10, 2):uint()
    local plen_item = root:add(f.payload_len, tvb(10, 2))
    root:add(f.qkey, tvb(12, 4))
    root:add(f.imm, tvb(16, 4))
    local gid_item = root:add(f.src_gid, tvb(20, 16))
    gid_item:add(f.gid_fabric, tvb(28, 4))
    gid_item:add(f.gid_index, tvb(32, 4))
    local crc_item = root:add(f.crc, tvb(36, 4))

    local crc_ok = nil
    if efa.prefs.verify_crc and caplen == wire_len then
        crc_ok = efa_crc32(tvb:raw(0, caplen)) == tvb(36, 4):uint()
        crc_item:add(f.crc_status, tvb(36, 4), crc_ok and CRC_GOOD or CRC_BAD):set_generated()
        if not crc_ok then crc_item:add_proto_expert_info(ex.bad_crc) end
        crc_item:append_text(crc_ok and " [correct]" or " [incorrect]")
    else
        crc_item:add(f.crc_status, tvb(36, 4), CRC_UNVERIFIED):set_generated()
    end

    if hdr_len < BASE_HEADER_LEN or hdr_len + payload_len ~= wire_len then
        plen_item:add_proto_expert_info(ex.bad_length,
            "hdr_len " .. hdr_len .. " + payload_len " .. payload_len .. " ~= datagram " .. wire_len)
    end

    local summary = ""
    if is_srd_data(ptype) or ptype == SRD_ACK or ptype == SRD_NAK then
        if hdr_len > BASE_HEADER_LEN then
            summary = dissect_srd(tvb, root, ptype, hdr_len, version)
            if is_rdma(ptype) then
                local rdma_summary = dissect_rdma(tvb, root, ptype, hdr_len, payload_len)
                if rdma_summary ~= "" then
                    summary = summary == "" and rdma_summary or (summary .. " " .. rdma_summary)
                end
            end
        else
            type_item:add_proto_expert_info(ex.short_ext)
        end
    elseif ptype ~= UD_SEND then
        type_item:add_proto_expert_info(ex.bad_type)
    end

    -- An SRD send's payload may be an RDM endpoint's packet: decoded when it looks like one.
    local body = math.max(hdr_len, BASE_HEADER_LEN)
    local rdm_summary = nil
    if efa.prefs.decode_rdm and ptype == SRD_DATA and caplen > body and hdr_len >= BASE_HEADER_LEN
        and hdr_len + payload_len == wire_len then
        local payload = tvb(body):tvb()
        local layout = rdm_layout(payload, payload_len)
        if layout then
            rdm_call.layout, rdm_call.summary = layout, nil
            rdm_handle:call(payload, pinfo, tree)
            rdm_summary = rdm_call.summary
        end
    end

    root:append_text(", " .. tname .. ", QPN " .. src_qpn .. " -> " .. dst_qpn)
    if path ~= 0 then root:append_text(", path " .. path) end
    local info = { tname }
    if summary ~= "" then info[#info + 1] = summary end
    info[#info + 1] = src_qpn .. "->" .. dst_qpn
    -- Next to the QPNs: together they name the route the packet took.
    if path ~= 0 then info[#info + 1] = "path=" .. path end
    if ptype == UD_SEND or ptype == SRD_DATA then info[#info + 1] = "len=" .. payload_len end
    -- RDMA packets use len= for the operation's length: their own bytes are the payload.
    if is_rdma(ptype) and payload_len > 0 then info[#info + 1] = "payload=" .. payload_len end
    if band(flags, FLAG_HAS_IMM) ~= 0 then info[#info + 1] = string.format("imm=0x%08x", tvb(16, 4):uint()) end
    if ptype == SRD_RDMA_WRITE and band(flags, FLAG_HAS_IMM) ~= 0 then
        -- The immediate rides on a write's last packet only, sent once the rest is acked.
        flags_item:add_proto_expert_info(ex.write_imm)
        info[#info + 1] = "[write-with-imm final]"
    end
    if version == WIRE_VERSION_1 and band(flags, FLAG_RNR_LAST_V1) ~= 0 then info[#info + 1] = "[RNR_LAST]" end
    if crc_ok == false then info[#info + 1] = "[bad CRC]" end
    if rdm_summary then
        -- The RDM packet first: the message's protocol path is what the reader looks for.
        return rdm_summary .. " | " .. table.concat(info, " "), "EFA-RDM"
    end
    if caplen > body then
        data_dissector:call(tvb(body):tvb(), pinfo, tree)
    end
    return table.concat(info, " "), "EFA-EMU"
end

-- As isBundle in src/io/datagram-coalescer.ts: the header decides, not the contents. A
-- datagram too short for a bundle header is a (broken) packet to the receiver, and so here.
local function is_bundle(tvb)
    return tvb:len() >= 4 and tvb:reported_len() >= BUNDLE_HEADER_LEN and tvb(0, 2):uint() == WIRE_MAGIC
        and tvb(2, 1):uint() == WIRE_VERSION and tvb(3, 1):uint() == BUNDLE_TYPE
end

-- Dissects a bundle: its header, then each packet in a subtree of its own, decoded by
-- dissect_packet as if it had come alone. A malformed bundle (a length past the end, fewer or
-- more packets than its count, bytes after the last one) is still walked as far as its lengths
-- allow, so what it held can be seen, and flagged as the receiver treats it: dropped whole.
local function dissect_bundle(tvb, pinfo, tree)
    local caplen, wire_len = tvb:len(), tvb:reported_len()
    pinfo.cols.protocol:set("EFA-EMU")
    local top = tree:add(efa, tvb(0, caplen))
    top:add(fb.magic, tvb(0, 2))
    top:add(fb.version, tvb(2, 1))
    top:add(fb.type, tvb(3, 1))
    if caplen < BUNDLE_HEADER_LEN then
        top:set_text("efa-emu bundle [truncated]")
        pinfo.cols.info:set("Bundle [truncated]")
        return caplen
    end
    local count = tvb(4, 2):uint()
    local count_item = top:add(fb.count, tvb(4, 2))
    top:add(fb.reserved, tvb(6, 2))

    local infos, protocol = {}, "EFA-EMU"
    local malformed, cut = false, false
    local o, n = BUNDLE_HEADER_LEN, 0
    while n < count do
        if o + BUNDLE_ENTRY_LEN > wire_len then
            count_item:add_proto_expert_info(ex.bundle_count,
                "Bundle count " .. count .. " but the datagram ends after " .. n .. " packets: the receiver drops the whole bundle")
            malformed = true
            break
        end
        if o + BUNDLE_ENTRY_LEN > caplen then
            cut = true
            break
        end
        n = n + 1
        local len = tvb(o, BUNDLE_ENTRY_LEN):uint()
        local start = o + BUNDLE_ENTRY_LEN
        local entry = top:add(fb.packet, tvb(o, math.min(BUNDLE_ENTRY_LEN + len, caplen - o)))
        entry:set_text("Packet " .. n .. " of " .. count .. ", " .. len .. " bytes")
        local len_item = entry:add(fb.len, tvb(o, BUNDLE_ENTRY_LEN))
        if start + len > wire_len then
            len_item:add_proto_expert_info(ex.bundle_len,
                "Packet " .. n .. " length " .. len .. " runs past the end of the datagram (" .. (wire_len - start) ..
                " bytes left): the receiver drops the whole bundle")
            if caplen > start then entry:add(fb.trailing, tvb(start, caplen - start)) end
            malformed = true
            o = wire_len
            break
        end
        local got = math.min(len, caplen - start)
        if got <= 0 then
            -- Nothing of it captured (or an empty entry): only its length can be shown.
            if len == 0 then
                entry:add_proto_expert_info(ex.bundle_not_packet, "Packet " .. n .. " is empty: the receiver drops it")
                infos[#infos + 1] = "[empty]"
            else
                cut = true
            end
        elseif got < 4 or tvb(start, 2):uint() ~= WIRE_MAGIC then
            entry:add(fb.trailing, tvb(start, got))
            entry:add_proto_expert_info(ex.bundle_not_packet)
            infos[#infos + 1] = "[not efa-emu]"
        else
            local info, proto = dissect_packet(tvb(start, got):tvb(), pinfo, entry, len)
            infos[#infos + 1] = info
            entry:append_text(": " .. info)
            if proto == "EFA-RDM" then protocol = proto end
        end
        o = start + len
    end
    if count == 0 then
        count_item:add_proto_expert_info(ex.bundle_count, "Bundle of no packets: the receiver drops it")
        malformed = true
    end
    -- Bytes past the last packet the count names: a count too small, or a sender's bug.
    if not malformed and not cut and o < wire_len then
        local item = top
        if caplen > o then item = top:add(fb.trailing, tvb(o, caplen - o)) end
        item:add_proto_expert_info(ex.bundle_trailing,
            (wire_len - o) .. " bytes after packet " .. n .. " of " .. count .. ": the receiver drops the whole bundle")
        malformed = true
    end

    local noun = count == 1 and " packet" or " packets"
    top:set_text("efa-emu bundle, " .. count .. noun)
    if malformed then top:append_text(" [malformed: dropped by the receiver]") end
    if cut then top:append_text(" [cut short by the capture's snaplen]") end
    local text = "Bundle of " .. count
    if #infos > 0 then text = text .. ": " .. table.concat(infos, "; ") end
    if cut then text = text .. " [truncated]" end
    if malformed then text = text .. " [malformed bundle]" end
    pinfo.cols.protocol:set(protocol)
    pinfo.cols.info:set(text)
    return caplen
end

local function dissect(tvb, pinfo, tree)
    local caplen = tvb:len()
    if caplen < 4 or tvb(0, 2):uint() ~= WIRE_MAGIC then return 0 end
    if is_bundle(tvb) then return dissect_bundle(tvb, pinfo, tree) end
    local info, protocol = dissect_packet(tvb, pinfo, tree, tvb:reported_len())
    pinfo.cols.protocol:set(protocol)
    pinfo.cols.info:set(info)
    return caplen
end

efa.dissector = dissect

-- Heuristic on UDP: the magic and version are all it takes, as for the emulator's own decoder;
-- a bundle, shorter than a packet header when malformed, is known by its type.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 4 then return false end
    local v = tvb(2, 1):uint()
    if tvb(0, 2):uint() ~= WIRE_MAGIC or (v ~= WIRE_VERSION and v ~= WIRE_VERSION_1) then return false end
    if tvb:reported_len() < BASE_HEADER_LEN and not is_bundle(tvb) then return false end
    -- The local function, not efa.dissector: reading that back gives the Dissector handle,
    -- and calling the handle would record the protocol twice in the frame's layers.
    dissect(tvb, pinfo, tree)
    return true
end
efa:register_heuristic("udp", heuristic)

local udp_port_table = DissectorTable.get("udp.port")
udp_port_table:add_for_decode_as(efa)

local registered_port = 0
function efa.prefs_changed()
    if efa.prefs.udp_port == registered_port then return end
    if registered_port ~= 0 then udp_port_table:remove(registered_port, efa) end
    registered_port = efa.prefs.udp_port
    if registered_port ~= 0 then udp_port_table:add(registered_port, efa) end
end
