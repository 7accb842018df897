@testable import EEKV
import Testing

/// The client's merge of a scan across nodes, against simulated nodes: the result is the union's
/// first keys in order, and no node is asked again for keys it has returned already.
@Suite("Scan merge of node replies, against simulated nodes")
struct ScanMergeRoundTests {
    typealias Record = ScanMerge.Record

    static func key(_ s: String) -> [UInt8] { Array(s.utf8) }
    static func records(_ keys: [String]) -> [Record] { keys.map { (key($0), key("v" + $0)) } }

    @Test("only the node bounding the merge is asked again; the others' keys past the bound are kept")
    func onlyTheBoundingNodeIsAskedAgain() {
        var scan = ScanMerge(nodes: 3, from: Self.key("a"), limit: 10)
        #expect(scan.pending == [0, 1, 2] && scan.wanted == 10)
        scan.absorb(node: 0, records: Self.records(["b", "d"]), bound: Self.key("d"))  // cut short
        scan.absorb(node: 1, records: Self.records(["c", "f"]), bound: nil)
        scan.absorb(node: 2, records: Self.records(["e"]), bound: nil)
        scan.merge()
        #expect(!scan.done)
        #expect(scan.result.map(\.0) == [Self.key("b"), Self.key("c"), Self.key("d")])
        #expect(scan.result[1].1 == Self.key("vc"))
        #expect(scan.pending == [0], "nodes 1 and 2 returned all they have")
        #expect(scan.from == Self.key("d") + [0] && !scan.after)
        #expect(scan.wanted == 7)
        scan.absorb(node: 0, records: Self.records(["g"]), bound: nil)
        scan.merge()
        #expect(scan.done)
        #expect(scan.result.map(\.0) == ["b", "c", "d", "e", "f", "g"].map(Self.key))
    }

    @Test("a node bounded further on keeps its keys and is asked again only once the merge reaches its bound")
    func furtherBoundWaits() {
        var scan = ScanMerge(nodes: 2, from: [], limit: 100)
        scan.absorb(node: 0, records: Self.records(["a"]), bound: Self.key("a"))
        scan.absorb(node: 1, records: Self.records(["b", "c"]), bound: Self.key("c"))
        scan.merge()
        #expect(scan.result.map(\.0) == [Self.key("a")])
        #expect(scan.pending == [0])
        scan.absorb(node: 0, records: Self.records(["d"]), bound: nil)
        scan.merge()
        #expect(scan.result.map(\.0) == ["a", "b", "c"].map(Self.key))
        #expect(scan.pending == [1], "node 1 only now, from past its own bound")
        #expect(scan.from == Self.key("c") + [0])
        scan.absorb(node: 1, records: [], bound: nil)
        scan.merge()
        #expect(scan.done)
        #expect(scan.result.map(\.0) == ["a", "b", "c", "d"].map(Self.key))
    }

    @Test("the limit ends the scan in the round that reaches it")
    func limitEnds() {
        var scan = ScanMerge(nodes: 2, from: [], limit: 2)
        scan.absorb(node: 0, records: Self.records(["a", "c"]), bound: Self.key("c"))
        scan.absorb(node: 1, records: Self.records(["b", "d"]), bound: Self.key("d"))
        scan.merge()
        #expect(scan.done && scan.pending.isEmpty)
        #expect(scan.result.map(\.0) == ["a", "b"].map(Self.key))
    }

    @Test("a bound of the longest key length is resumed after, not at the next longer key")
    func longestBound() {
        var scan = ScanMerge(nodes: 1, from: [], limit: 5)
        let longest = [UInt8](repeating: 0x61, count: Store.maxKeySize)
        scan.absorb(node: 0, records: [], bound: longest)
        scan.merge()
        #expect(!scan.done && scan.after && scan.from == longest && scan.pending == [0])
    }

    /// A node holding `keys` (sorted), which answers like a real one: from `from` on (after it),
    /// at most `wanted`, sometimes cut short at a random point or at a key it merely walked past.
    struct SimulatedNode {
        let keys: [[UInt8]]
        var returned: Set<[UInt8]> = []
        var askedTwice = false

        mutating func answer(from: [UInt8], after: Bool, wanted: Int, rng: inout some RandomNumberGenerator)
            -> ([Record], [UInt8]?)
        {
            let rest = keys.filter { after ? from.lexicographicallyPrecedes($0) : !$0.lexicographicallyPrecedes(from) }
            var take = min(wanted, rest.count)
            var bound: [UInt8]? = rest.count > take ? rest[take - 1] : nil
            switch Int.random(in: 0..<4, using: &rng) {
            case 0 where take > 1:
                take = Int.random(in: 1..<take, using: &rng)  // the reply filled up
                bound = rest[take - 1]
            case 1:
                // Stopped at its skip bound, on another node's key between two of its own.
                let cut = Int.random(in: 0...take, using: &rng)
                let walked = cut < rest.count ? rest[cut] : [0xFF, 0xFF]
                take = cut
                let before = Array(walked.dropLast()) + [walked.last! &- 1, 0xEE]
                bound = before.lexicographicallyPrecedes(from) ? from : before  // never behind where it started
            default: break
            }
            let answer = Array(rest.prefix(take))
            for k in answer where !returned.insert(k).inserted { askedTwice = true }
            return (answer.map { ($0, $0) }, bound)
        }
    }

    @Test("against random nodes the result is the union's first keys, and no node returns a key twice", arguments: 0..<40)
    func randomNodes(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed))
        let nodeCount = Int.random(in: 1...5, using: &rng)
        var all: [[UInt8]] = []
        var nodes = (0..<nodeCount).map { _ in SimulatedNode(keys: []) }
        var perNode: [[[UInt8]]] = Array(repeating: [], count: nodeCount)
        for i in 0..<Int.random(in: 0...300, using: &rng) {
            let k: [UInt8] = [UInt8(i / 26 + 0x61), UInt8(i % 26 + 0x61)]
            all.append(k)
            perNode[Int.random(in: 0..<nodeCount, using: &rng)].append(k)
        }
        for n in 0..<nodeCount { nodes[n] = SimulatedNode(keys: perNode[n]) }
        let start: [UInt8] = [UInt8.random(in: 0x61...0x6C, using: &rng)]
        let limit = Int.random(in: 1...120, using: &rng)
        var scan = ScanMerge(nodes: nodeCount, from: start, limit: limit)
        var rounds = 0
        while !scan.done && rounds < 10_000 {
            for n in scan.pending {
                let (records, bound) = nodes[n].answer(from: scan.from, after: scan.after, wanted: scan.wanted, rng: &rng)
                scan.absorb(node: n, records: records, bound: bound)
            }
            scan.merge()
            rounds += 1
        }
        let expected = Array(all.filter { !$0.lexicographicallyPrecedes(start) }.prefix(limit))
        #expect(scan.done)
        #expect(scan.result.map(\.0) == expected)
        #expect(nodes.allSatisfy { !$0.askedTwice })
    }
}

/// A small seeded generator, so a failing case can be replayed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
