/// A scan across the nodes of a cluster, merged in key order. Each node holds its own slots' keys
/// (nodes skip keys of slots they do not serve), so the nodes' keys are disjoint.
///
/// A round asks some nodes for their first keys from `from`. A node whose reply was cut short
/// (by the limit, by the message size, or by its skip bound) gives the last key it looked at: it
/// may hold keys past it that it has not returned. The merge trusts keys up to the lowest such
/// bound over all nodes, and keeps every node's keys past it for the next round: only the nodes
/// whose bound was that lowest one are asked again, from just past it. A node that returned all it
/// has, or one whose bound lies further on, is not asked twice for the same keys.
struct ScanMerge {
    typealias Record = ([UInt8], [UInt8])

    let limit: Int
    /// The scan's result so far, in key order.
    private(set) var result: [Record] = []
    /// Per node: keys it returned that are not merged yet.
    private var buffered: [[Record]]
    /// Per node: past this key it may hold keys it has not returned (nil: it returned all it has).
    private var bounds: [[UInt8]?]
    /// The nodes the next round asks, and from where: at `from`, or after it (`after`) when the
    /// key just past the bound would be one byte too long for a key.
    private(set) var pending: [Int]
    private(set) var from: [UInt8]
    private(set) var after = false
    /// No keys are left to find, or `limit` are in.
    private(set) var done = false

    init(nodes: Int, from start: [UInt8], limit: Int) {
        self.limit = limit
        buffered = Array(repeating: [], count: nodes)
        bounds = Array(repeating: nil, count: nodes)
        pending = Array(0..<nodes)
        from = start
    }

    /// How many keys the next round asks each node for.
    var wanted: Int { limit - result.count }

    /// Takes node `node`'s reply to this round: its records from `from` on, and its
    /// bound (nil: it has no keys past them).
    mutating func absorb(node: Int, records: [Record], bound: [UInt8]?) {
        buffered[node] = records
        bounds[node] = bound
    }

    /// Once every pending node's reply is absorbed: merges the keys up to the lowest bound into
    /// the result and picks the nodes the next round asks (none when `done`).
    mutating func merge() {
        var lowest: [UInt8]? = nil
        for case let b? in bounds where lowest == nil || b.lexicographicallyPrecedes(lowest!) { lowest = b }
        var trusted: [Record] = []
        for records in buffered {
            trusted += records.lazy.filter { record in lowest.map { !$0.lexicographicallyPrecedes(record.0) } ?? true }
        }
        trusted.sort { $0.0.lexicographicallyPrecedes($1.0) }
        let wanted = self.wanted
        result += trusted.prefix(wanted)
        guard let lowest, trusted.count < wanted else {
            done = true
            pending = []
            return
        }
        // Every trusted key is in the result: each node keeps only its keys past the bound, and
        // the nodes bounded there have none left.
        for i in buffered.indices {
            buffered[i].removeAll { !lowest.lexicographicallyPrecedes($0.0) }
        }
        pending = bounds.indices.filter { bounds[$0] == lowest }
        // The next key is `lowest ‖ 0x00`, unless that is one byte too long: then the nodes are
        // asked to start after `lowest` (a flag nodes before it refuse).
        after = lowest.count >= Store.maxKeySize
        from = after ? lowest : lowest + [0]
    }
}
