-- Wireshark dissector for efa-emu, the emulated AWS EFA fabric.
--
-- Decodes the 40-byte base header of every efa-emu datagram (src/wire/header.ts), the SRD
-- extensions (src/wire/srd-header.ts) and the RDMA extension that RDMA writes, read requests
-- and read responses carry after their SRD data part (src/wire/rdma-header.ts); the rest of
-- the datagram is shown as data. It finds
-- the traffic by itself (heuristic on UDP: magic 0xEFA1, version 1 or 2), and can also be forced
-- onto a port with "Decode As... -> UDP port -> EFA_EMU" or the "UDP port" preference.
--
-- Load: wireshark -X lua_script:efa-emu.lua run.pcap
--   or copy it into the personal Lua plugins folder (Help > About > Folders). See README.md.
--
-- Filter fields (all under efa_emu.*):
--   efa_emu.magic efa_emu.version efa_emu.type efa_emu.flags efa_emu.flags.has_imm
--   efa_emu.flags.rnr_last (version 1 only)
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
local FLAG_HAS_IMM = 0x01
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
local field_list = {}
for _, field in pairs(f) do field_list[#field_list + 1] = field end
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
efa.experts = { ex.bad_crc, ex.bad_type, ex.bad_length, ex.short_ext, ex.rnr, ex.nak_final, ex.write_imm }

efa.prefs.udp_port = Pref.uint("UDP port", 0,
    "Always decode this UDP port as efa-emu (0: none; the heuristic finds the traffic anyway)")
efa.prefs.verify_crc = Pref.bool("Verify CRC-32", true,
    "Check each datagram's CRC-32 as the receiving device does (costs time on large captures)")

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

local function dissect(tvb, pinfo, tree)
    local caplen = tvb:len()
    if caplen < 4 or tvb(0, 2):uint() ~= WIRE_MAGIC then return 0 end
    pinfo.cols.protocol:set("EFA-EMU")

    local wire_len = tvb:reported_len()
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
        pinfo.cols.info:set(tname .. " [truncated]")
        return caplen
    end
    local flags = tvb(4, 1):uint()
    local flags_item = root:add(f.flags, tvb(4, 1))
    flags_item:add(f.has_imm, tvb(4, 1))
    if version == WIRE_VERSION_1 then flags_item:add(f.rnr_last, tvb(4, 1)) end
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

    root:append_text(", " .. tname .. ", QPN " .. src_qpn .. " -> " .. dst_qpn)
    local info = { tname }
    if summary ~= "" then info[#info + 1] = summary end
    info[#info + 1] = src_qpn .. "->" .. dst_qpn
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
    pinfo.cols.info:set(table.concat(info, " "))

    local body = math.max(hdr_len, BASE_HEADER_LEN)
    if caplen > body then
        data_dissector:call(tvb(body):tvb(), pinfo, tree)
    end
    return caplen
end

efa.dissector = dissect

-- Heuristic on UDP: the magic and version are all it takes, as for the emulator's own decoder.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 4 or tvb:reported_len() < BASE_HEADER_LEN then return false end
    local v = tvb(2, 1):uint()
    if tvb(0, 2):uint() ~= WIRE_MAGIC or (v ~= WIRE_VERSION and v ~= WIRE_VERSION_1) then return false end
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
