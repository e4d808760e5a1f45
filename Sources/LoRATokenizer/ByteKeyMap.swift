// ByteKeyMap and PairMap: open-addressing hash tables for the tokenizer's hot path. Keys are byte strings
// looked up by pointer and length (no String or Array built per lookup), or packed token-id pairs (BPE merges).
import Foundation

/// Byte string → (Int32, Int32). Keys live in one arena; lookups allocate nothing.
struct ByteKeyMap {
    private struct Slot {
        var hash: UInt64 = 0  // 0 = empty
        var keyStart: Int32 = 0
        var keyLen: Int32 = 0
        var a: Int32 = 0
        var b: Int32 = 0
    }

    private(set) var count = 0
    private var slots: [Slot]
    private var mask: Int
    private var keys: [UInt8] = []

    init(capacity: Int = 16) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        slots = [Slot](repeating: Slot(), count: n)
        mask = n - 1
    }

    /// Bytes held by the keys (for bounding a cache).
    var keyBytes: Int { keys.count }

    @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(n)
        var i = 0
        let raw = UnsafeRawPointer(p)
        while i + 8 <= n {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
            i += 8
        }
        var tail: UInt64 = 0, shift: UInt64 = 0
        while i < n { tail |= UInt64(p[i]) << shift; shift += 8; i += 1 }
        h = (h ^ tail) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 29
        return h == 0 ? 1 : h
    }

    func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> (Int32, Int32)? {
        let h = ByteKeyMap.hash(p, n)
        return slots.withUnsafeBufferPointer { s in
            keys.withUnsafeBufferPointer { k in
                var i = Int(truncatingIfNeeded: h) & mask
                while true {
                    let slot = s[i]
                    if slot.hash == 0 { return nil }
                    if slot.hash == h && Int(slot.keyLen) == n && (n == 0 || memcmp(k.baseAddress! + Int(slot.keyStart), p, n) == 0) {
                        return (slot.a, slot.b)
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    func find(_ bytes: [UInt8]) -> (Int32, Int32)? {
        bytes.withUnsafeBufferPointer { b in
            var one: UInt8 = 0
            return b.baseAddress.map { find($0, b.count) } ?? find(&one, 0)
        }
    }

    /// Inserts or replaces.
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, _ a: Int32, _ b: Int32 = 0) {
        if (count + 1) * 2 > slots.count { grow() }
        let h = ByteKeyMap.hash(p, n)
        var i = Int(truncatingIfNeeded: h) & mask
        while slots[i].hash != 0 {
            let slot = slots[i]
            if slot.hash == h && Int(slot.keyLen) == n
                && keys.withUnsafeBufferPointer({ n == 0 || memcmp($0.baseAddress! + Int(slot.keyStart), p, n) == 0 }) {
                slots[i].a = a
                slots[i].b = b
                return
            }
            i = (i + 1) & mask
        }
        let start = keys.count
        keys.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        slots[i] = Slot(hash: h, keyStart: Int32(start), keyLen: Int32(n), a: a, b: b)
        count += 1
    }

    mutating func insert(_ bytes: [UInt8], _ a: Int32, _ b: Int32 = 0) {
        bytes.withUnsafeBufferPointer { buf in
            var one: UInt8 = 0
            if let base = buf.baseAddress { insert(base, buf.count, a, b) } else { insert(&one, 0, a, b) }
        }
    }

    mutating func removeAll() {
        for i in slots.indices { slots[i].hash = 0 }
        keys.removeAll(keepingCapacity: true)
        count = 0
    }

    private mutating func grow() {
        let old = slots
        slots = [Slot](repeating: Slot(), count: old.count * 2)
        mask = slots.count - 1
        for slot in old where slot.hash != 0 {
            var i = Int(truncatingIfNeeded: slot.hash) & mask
            while slots[i].hash != 0 { i = (i + 1) & mask }
            slots[i] = slot
        }
    }
}

/// (left id, right id) → (rank, merged id): the BPE merge table.
struct PairMap {
    private var keys: [UInt64]  // UInt64.max = empty
    private var values: [UInt64]  // rank << 32 | merged id
    private let mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        keys = [UInt64](repeating: .max, count: n)
        values = [UInt64](repeating: 0, count: n)
        mask = n - 1
    }

    @inline(__always) private static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    /// Later entries replace earlier ones for the same pair (the tokenizers crate collects merges into a HashMap).
    mutating func insert(left: Int32, right: Int32, rank: Int, merged: Int32) {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var i = PairMap.slot(key, mask)
        while keys[i] != .max && keys[i] != key { i = (i + 1) & mask }
        if keys[i] == .max { count += 1 }
        keys[i] = key
        values[i] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// rank << 32 | merged id, or UInt64.max when the pair does not merge.
    @inline(__always) func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        return keys.withUnsafeBufferPointer { k in
            var i = PairMap.slot(key, mask)
            while true {
                let kk = k[i]
                if kk == key { return values.withUnsafeBufferPointer { $0[i] } }
                if kk == .max { return .max }
                i = (i + 1) & mask
            }
        }
    }
}
