import CSystemShims

/// A value made of numbered fields, which the node can update in place (``KVClient/merge``): the
/// record form of a value, as a Redis hash is the record form of a string.
///
/// Layout (integers little-endian): `count u16 | (field u16 | length u32 | bytes) × count`, field
/// numbers strictly ascending. Ascending order makes a record's encoding unique and lets a merge
/// walk the stored record and the patch side by side, in one pass with no allocation, on the
/// writer thread.
///
/// Any value can be written with `put`; only a merge requires the stored value to be a record.
public enum FieldRecord {
    /// The size of `count` and of each field's header.
    static let headerSize = 2
    static let fieldHeaderSize = 6

    // MARK: Arrays (clients)

    /// Why `fields` cannot be encoded as a record, or nil if they can: at most 65535 fields,
    /// numbered 0-65535. `encode` requires this to be nil.
    public static func problem(with fields: [Int: [UInt8]]) -> String? {
        if fields.count > Int(UInt16.max) { return "a record has at most 65535 fields" }
        if let bad = fields.keys.first(where: { !(0...Int(UInt16.max)).contains($0) }) {
            return "field number \(bad) is not 0-65535"
        }
        return nil
    }

    public static func encode(_ fields: [Int: [UInt8]]) -> [UInt8] {
        precondition(fields.count <= Int(UInt16.max), "a record has at most 65535 fields")
        var out: [UInt8] = []
        out.reserveCapacity(headerSize + fields.values.reduce(0) { $0 + fieldHeaderSize + $1.count })
        append(&out, UInt16(fields.count))
        for (field, value) in fields.sorted(by: { $0.key < $1.key }) {
            precondition(field >= 0 && field <= Int(UInt16.max), "field numbers are 0-65535")
            append(&out, UInt16(field))
            let n = UInt32(value.count)
            append(&out, UInt16(truncatingIfNeeded: n))
            append(&out, UInt16(truncatingIfNeeded: n >> 16))
            out += value
        }
        return out
    }

    /// The fields of `bytes`, or nil if they are not a record.
    public static func decode(_ bytes: [UInt8]) -> [Int: [UInt8]]? {
        bytes.withUnsafeBytes { b in
            var fields: [Int: [UInt8]] = [:]
            let valid = forEachField(b) { field, value in fields[Int(field)] = Array(value) }
            return valid ? fields : nil
        }
    }

    /// Whether `bytes` is a record, and (if `field` is given) holds that field. Walks the layout
    /// without building anything (a read only needs this answer).
    public static func check(_ bytes: [UInt8], hasField field: Int?) -> Bool {
        bytes.withUnsafeBytes { b in
            var found = field == nil
            return forEachField(b) { f, _ in if Int(f) == field { found = true } } && found
        }
    }

    // MARK: Raw bytes (the node; no allocation)

    /// Whether `bytes` is a well-formed record.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool { forEachField(bytes) { _, _ in } }

    /// Calls `visit` with each field in order; false (after visiting a prefix) if `bytes` is not
    /// a well-formed record: truncated, trailing bytes, or field numbers not ascending.
    public static func forEachField(
        _ bytes: UnsafeRawBufferPointer, _ visit: (UInt16, UnsafeRawBufferPointer) -> Void
    ) -> Bool {
        var r = ByteReader(bytes)
        guard let count = r.u16() else { return false }
        var previous = -1
        for _ in 0..<count {
            guard let field = r.u16(), Int(field) > previous, let n = r.u32(), let value = r.take(Int(n)) else {
                return false
            }
            previous = Int(field)
            visit(field, value)
        }
        return r.remaining == 0
    }

    /// Why a merge produced no record.
    public enum MergeFailure: Error, Sendable {
        /// The stored value is not a record.
        case notARecord
        /// The merged record would exceed `capacity` or 65535 fields.
        case tooLarge
    }

    /// Writes into `out` the record `stored` (absent: an empty record) with every field of
    /// `patch` set: fields of both take the patch's bytes, the others are kept. Returns the merged
    /// record's size. `patch` must be valid (``isValid(_:)``); `stored` is checked here.
    ///
    /// Memory: reads `stored` and `patch` and writes `out[0..<capacity]`, which must not overlap
    /// them; nothing is retained.
    public static func merge(
        stored: UnsafeRawBufferPointer?, patch: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawPointer, capacity: Int
    ) -> Result<Int, MergeFailure> {
        if let stored, !isValid(stored) { return .failure(.notARecord) }
        var a = stored.map(FieldCursor.init) ?? FieldCursor()
        var b = FieldCursor(patch)
        var w = ByteWriter(base: out, capacity: capacity)
        var count = 0
        guard w.u16(0) else { return .failure(.tooLarge) }
        while let next = FieldCursor.lower(&a, &b) {
            count += 1
            guard count <= Int(UInt16.max), w.u16(next.field), w.u32(UInt32(next.value.count)),
                w.bytes(next.value)
            else { return .failure(.tooLarge) }
        }
        out.storeBytes(of: UInt16(count).littleEndian, as: UInt16.self)
        return .success(w.count)
    }

    private static func append(_ out: inout [UInt8], _ v: UInt16) {
        out.append(UInt8(truncatingIfNeeded: v))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
    }
}

/// Walks the fields of a record already known to be valid.
struct FieldCursor {
    var reader: ByteReader
    var left: Int
    var current: (field: UInt16, value: UnsafeRawBufferPointer)?

    /// An empty record (a merge into a key that does not exist).
    init() {
        reader = ByteReader(UnsafeRawBufferPointer(start: nil, count: 0))
        left = 0
    }

    init(_ record: UnsafeRawBufferPointer) {
        reader = ByteReader(record)
        left = Int(reader.u16() ?? 0)
        advance()
    }

    mutating func advance() {
        guard left > 0, let f = reader.u16(), let n = reader.u32(), let v = reader.take(Int(n)) else {
            current = nil
            return
        }
        left -= 1
        current = (f, v)
    }

    /// The next field of the merge of `stored` and `patch` (on equal numbers the patch's, and
    /// both advance).
    static func lower(
        _ stored: inout FieldCursor, _ patch: inout FieldCursor
    ) -> (field: UInt16, value: UnsafeRawBufferPointer)? {
        switch (stored.current, patch.current) {
        case (nil, nil): return nil
        case (let s?, nil):
            stored.advance()
            return s
        case (nil, let p?):
            patch.advance()
            return p
        case (let s?, let p?):
            if s.field < p.field {
                stored.advance()
                return s
            }
            if s.field == p.field { stored.advance() }
            patch.advance()
            return p
        }
    }
}
