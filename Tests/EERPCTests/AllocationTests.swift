import CAllocCounter
import EERPC
import Testing

/// State the allocation test's continuation reaches through the Rpc context (so the closure
/// captures nothing and needs no context allocation of its own).
final class SteadyStateLoad {
    var remaining = 0
    var completed = 0
    /// RPCs that completed with an error (a loop of failures would allocate nothing too).
    var failed = 0
    var session = 0
    var type = TestRequest.echo
}

/// Re-issues the request it completes until `remaining` runs out: a closed loop of small RPCs.
func reissue(_ c: Completion) {
    let load = Unmanaged<SteadyStateLoad>.fromOpaque(c.context!).takeUnretainedValue()
    load.completed += 1
    if c.status != .ok { load.failed += 1 }
    guard load.remaining > 0 else { return }
    load.remaining -= 1
    var response = c.response
    response.resize(to: response.capacity)
    try! c.rpc.enqueueRequest(
        session: c.session, type: load.type, request: c.request, response: response, tag: c.tag,
        continuation: reissue)
}

/// A heap allocation the optimiser cannot remove or move to the stack.
@inline(never)
func makeArray(count: Int) -> [Int] { [Int](repeating: 7, count: count) }

#if DEBUG
let releaseOnly = true
#else
let releaseOnly = false
#endif

@Suite("Allocation-free dispatch")
struct AllocationTests {
    /// Guards against a test that cannot fail: if the interposer were not linked in, every
    /// count would be zero.
    @Test("the interposer sees Swift allocations on this thread")
    func interposerWorks() {
        ee_alloc_counting_start()
        let array = makeArray(count: 1_000)
        let counts = ee_alloc_counting_stop()
        #expect(array.count == 1_000)
        #expect(counts.mallocs >= 1)
        #expect(counts.bytes >= 8_000)
    }

    /// Client and server Rpcs run on this thread, so every malloc either of them makes on the
    /// data path is counted. Allocation-freedom is a property of optimised code, so the check
    /// runs in the release pass of `make test` (`swift test -c release --filter AllocationTests`).
    @Test(
        "10,000 small RPCs in steady state allocate nothing on the dispatch thread",
        .disabled(if: releaseOnly, "runs in the release pass of make test"))
    func steadyStateRPCsDoNotAllocate() throws {
        try measureSteadyState(try Pair())
    }

    @Test(
        "10,000 small encrypted RPCs (inline AES-GCM) allocate nothing either",
        .disabled(if: releaseOnly, "runs in the release pass of make test"))
    func steadyStateEncryptedRPCsDoNotAllocate() throws {
        let credentials = try TestCredentials()
        try measureSteadyState(try Pair(config: .encrypted(), tls: credentials.config("node-0")))
    }

    /// Responses sealed at once from the handler's bytes (one packet, in the slot's own buffer,
    /// and three, in a pool buffer) allocate nothing either.
    @Test(
        "10,000 encrypted RPCs answered with respond(copying:) allocate nothing",
        .disabled(if: releaseOnly, "runs in the release pass of make test"), arguments: [32, 4_000])
    func presealedResponsesDoNotAllocate(size: Int) throws {
        let credentials = try TestCredentials()
        let pair = try Pair(config: .encrypted(), tls: credentials.config("node-0"))
        try measureSteadyState(pair, type: TestRequest.splitEcho, size: size)
        #expect(pair.server.stats.presealedPackets >= 10_000)
    }

    private func measureSteadyState(_ pair: Pair<UDPTransport>, type: UInt8 = TestRequest.echo, size: Int = 32) throws {
        let s = try pair.connect()
        let e = pair.client.endpoint
        let load = SteadyStateLoad()
        load.type = type
        e.context = Unmanaged.passUnretained(load).toOpaque()
        // 8 requests in flight keep every slot busy, as a loaded client would.
        for i in 0..<8 {
            var request = e.allocate(size: size)!
            fill(&request, size: size, seed: UInt64(i))
            let response = e.allocate(size: size)!
            try e.enqueueRequest(
                session: s, type: type, request: request, response: response, tag: UInt64(i),
                continuation: reissue)
        }
        // Warm-up: lazily created metadata, first slab refills, socket buffers.
        load.remaining = 2_000
        #expect(pair.pump { load.remaining == 0 })

        load.completed = 0
        load.remaining = 10_000
        ee_alloc_counting_start()
        while load.completed < 10_000 {
            pair.client.runOnce()
            pair.server.runOnce()
        }
        let counts = ee_alloc_counting_stop()
        #expect(counts.mallocs == 0, "\(counts.mallocs) mallocs, \(counts.bytes) bytes over 10,000 RPCs")
        #expect(load.failed == 0, "\(load.failed) RPCs failed")
        pair.pump { e.inFlightCount(session: s) == 0 }
    }
}
