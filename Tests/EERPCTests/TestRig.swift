import Glibc
import CSystemShims
import EERPC
import Testing

/// Request types the tests register.
enum TestRequest {
    /// Echoes the request.
    static let echo: UInt8 = 1
    /// Echoes the request from a background thread.
    static let backgroundEcho: UInt8 = 2
    /// Answers with `n` bytes, where `n` is the request's first 4 bytes (little-endian).
    static let sized: UInt8 = 3
    /// Echoes and counts how often it ran per request id (first 8 bytes) in the Rpc context.
    static let countingEcho: UInt8 = 4
    /// Answers a small request (id u64, size u32) with `size` bytes that depend on the id.
    static let patterned: UInt8 = 5
    /// A deferred handler: echoes requests with an odd id at once (on the dispatch thread) and
    /// passes the others to `deferredEchoes`, for another thread to answer.
    static let deferredEcho: UInt8 = 6
    /// Counts like `countingEcho`, and echoes with `respond(copying:_:)`, the request split into
    /// a prefix of 0, 1, 3, 8 or 1,500 bytes (by id) and the rest.
    static let copyingEcho: UInt8 = 7
    /// Echoes with `respond(copying:_:)`, split after 3 bytes; allocates nothing itself.
    static let splitEcho: UInt8 = 8
    /// `splitEcho` from a background thread (copied, not sealed at once).
    static let backgroundSplitEcho: UInt8 = 9
    /// A foreground handler that answers later: leaves its handle in `heldHandles`.
    static let held: UInt8 = 10
}

/// The requests `TestRequest.held` left for the test to answer (on the dispatch thread).
let heldHandles = BoundedQueue<RequestHandle>(capacity: 64)

/// The requests `TestRequest.deferredEcho` left for another thread to answer.
let deferredEchoes = BoundedQueue<RequestHandle>(capacity: 4_096)

/// Byte `i` of the `patterned` response to request `id`.
@inline(__always)
func patternByte(id: UInt64, _ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: id &* 31 &+ UInt64(i) &* 7 &+ UInt64(i >> 10)) }

/// Responds to `handle` with the request's bytes.
func echo(_ handle: RequestHandle) {
    var response =
        handle.request.count <= handle.preallocatedResponse.capacity
        ? handle.preallocatedResponse : handle.allocateResponse(size: handle.request.count)!
    response.assign(handle.request)
    handle.respond(response)
}

/// Per-server counts of handler executions, reached through the Rpc context.
final class ExecutionCounter {
    var counts: [UInt64: Int] = [:]
    /// Exactly `total` requests ran, each once.
    func eachRanOnce(total: Int) -> Bool { counts.count == total && counts.values.allSatisfy { $0 == 1 } }
}

/// Registers the test handlers on a Nexus.
func registerTestHandlers(_ nexus: Nexus) throws {
    try nexus.register(type: TestRequest.echo) { echo($0) }
    try nexus.register(type: TestRequest.backgroundEcho, mode: .background) { echo($0) }
    try nexus.register(type: TestRequest.deferredEcho, mode: .deferred) { handle in
        #expect(handle.isBackground, "a deferred handle may be answered from any thread")
        if handle.request.loadUnaligned(as: UInt64.self) & 1 == 1 {
            echo(handle)
        } else {
            while !deferredEchoes.push(handle) { sched_yield() }
        }
    }
    try nexus.register(type: TestRequest.held) { handle in _ = heldHandles.push(handle) }
    try nexus.register(type: TestRequest.sized) { handle in
        let n = Int(handle.request.loadUnaligned(as: UInt32.self))
        var response = handle.allocateResponse(size: n)!
        for i in stride(from: 0, to: n, by: 1) { response.data.storeBytes(of: UInt8(truncatingIfNeeded: i &* 7), toByteOffset: i, as: UInt8.self) }
        response.resize(to: n)
        handle.respond(response)
    }
    try nexus.register(type: TestRequest.patterned) { handle in
        let id = handle.request.loadUnaligned(as: UInt64.self)
        let n = Int(handle.request.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        var response = handle.allocateResponse(size: n)!
        for i in 0..<n { response.data.storeBytes(of: patternByte(id: id, i), toByteOffset: i, as: UInt8.self) }
        response.resize(to: n)
        handle.respond(response)
    }
    try nexus.register(type: TestRequest.countingEcho) { handle in
        let counter = Unmanaged<ExecutionCounter>.fromOpaque(handle.context!).takeUnretainedValue()
        let id = handle.request.loadUnaligned(as: UInt64.self)
        counter.counts[id, default: 0] += 1
        echo(handle)
    }
    for (type, mode) in [(TestRequest.splitEcho, HandlerMode.foreground), (TestRequest.backgroundSplitEcho, .background)] {
        try nexus.register(type: type, mode: mode) { handle in
            let split = min(handle.request.count, 3)
            _ = handle.respond(
                copying: UnsafeRawBufferPointer(rebasing: handle.request[..<split]),
                UnsafeRawBufferPointer(rebasing: handle.request[split...]))
        }
    }
    try nexus.register(type: TestRequest.copyingEcho) { handle in
        let counter = Unmanaged<ExecutionCounter>.fromOpaque(handle.context!).takeUnretainedValue()
        let id = handle.request.loadUnaligned(as: UInt64.self)
        counter.counts[id, default: 0] += 1
        let split = min(handle.request.count, [0, 1, 3, 8, 1_500][Int(id % 5)])
        let sent = handle.respond(
            copying: UnsafeRawBufferPointer(rebasing: handle.request[..<split]),
            UnsafeRawBufferPointer(rebasing: handle.request[split...]))
        #expect(sent)
    }
}

/// A server Rpc and a client Rpc in one Nexus, both driven from the test's thread, so tests
/// are deterministic and need no extra cores.
final class Pair<T: Transport & ~Copyable> {
    let nexus: Nexus
    let server: Rpc<T>
    let client: Rpc<T>
    let counter = ExecutionCounter()

    /// `clientConfig`: the client's, if not `config`.
    init(
        server: consuming T, client: consuming T, config: RpcConfig = .plaintext, clientConfig: RpcConfig? = nil,
        backgroundThreads: Int = 1, tls: TLSConfig? = nil
    ) throws {
        nexus = try Nexus(backgroundThreads: backgroundThreads, tls: tls)
        try registerTestHandlers(nexus)
        self.server = try Rpc(nexus: nexus, id: 1, transport: server, config: config)
        self.client = try Rpc(nexus: nexus, id: 2, transport: client, config: clientConfig ?? config)
        self.server.endpoint.context = Unmanaged.passUnretained(counter).toOpaque()
    }

    deinit { nexus.shutdown() }

    /// Runs both event loops until `condition` holds or the timeout passes.
    @discardableResult
    func pump(timeoutNs: UInt64 = 20_000_000_000, until condition: () -> Bool) -> Bool {
        let start = DispatchTime.nowNs
        while !condition() {
            client.runOnce()
            server.runOnce()
            if DispatchTime.nowNs - start > timeoutNs { return condition() }
        }
        return true
    }

    func connect() throws -> Int {
        let s = try client.endpoint.createSession(host: "127.0.0.1", port: nexus.port, remoteRpcID: server.id)
        pump { client.endpoint.sessionState(s) != .connecting }
        try #require(client.endpoint.sessionState(s) == .connected)
        return s
    }
}

extension Pair where T == UDPTransport {
    convenience init(
        mtu: Int = Wire.defaultMTU, config: RpcConfig = .plaintext, backgroundThreads: Int = 1, tls: TLSConfig? = nil
    ) throws {
        try self.init(
            server: try UDPTransport(mtu: mtu), client: try UDPTransport(mtu: mtu), config: config,
            backgroundThreads: backgroundThreads, tls: tls)
    }
}

enum DispatchTime {
    static var nowNs: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Collects completions of one test (the continuation's context).
final class Completions {
    var ok = 0
    var failed = 0
    var mismatched = 0
    var done = 0
}

/// Fills `buffer` with a pattern derived from `seed`.
func fill(_ buffer: inout MsgBuffer, size: Int, seed: UInt64) {
    buffer.resize(to: size)
    var x = seed | 1
    for i in 0..<size {
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        buffer.data.storeBytes(of: UInt8(truncatingIfNeeded: x >> 56), toByteOffset: i, as: UInt8.self)
    }
}

func sameBytes(_ a: MsgBuffer, _ b: MsgBuffer) -> Bool {
    a.size == b.size && memcmp(a.data, b.data, a.size) == 0
}

/// A transport wrapper that keeps a copy of every packet sent (header and payload, as on the
/// wire), like a packet capture: replay tests re-inject them. Test-only (it allocates).
struct TapTransport<Base: Transport & ~Copyable>: Transport, ~Copyable {
    static var kind: TransportKind { Base.kind }
    var base: Base
    var captured: [[UInt8]] = []
    /// Packets per transmit call that sent any, in order.
    var transmitCalls: [Int] = []
    init(_ base: consuming Base) { self.base = base }
    var mtu: Int { base.mtu }
    var maxBurst: Int { base.maxBurst }
    var maxReceive: Int { base.maxReceive }
    var localRoute: RoutingInfo { base.localRoute }
    var stats: TransportStats { base.stats }
    func resolve(_ remote: RoutingInfo) -> RoutingInfo? { base.resolve(remote) }
    mutating func transmit(_ items: UnsafePointer<TxItem>, count: Int) -> Int {
        let n = base.transmit(items, count: count)
        if n > 0 { transmitCalls.append(n) }
        for i in 0..<n {
            var bytes = withUnsafeBytes(of: items[i].header0) { Array($0) } + withUnsafeBytes(of: items[i].header1) { Array($0) }
            if let data = items[i].data, items[i].dataLength > 0 {
                bytes += UnsafeRawBufferPointer(start: data, count: items[i].dataLength)
            }
            captured.append(bytes)
        }
        return n
    }
    mutating func receive() -> Int { base.receive() }
    func received(_ index: Int) -> UnsafeMutableRawBufferPointer { base.received(index) }
}

/// A transport wrapper that, while its switch is on, loses every packet of one type (requests, or
/// responses) but those numbered 0: the server then holds partly received requests, or the client
/// partly received responses. Test-only.
struct TailLosingTransport<Base: Transport & ~Copyable>: Transport, ~Copyable {
    final class Switch { var on = false }
    static var kind: TransportKind { Base.kind }
    var base: Base
    let losing: Switch
    let type: PacketType
    init(_ base: consuming Base, losing: Switch, type: PacketType = .request) {
        self.base = base
        self.losing = losing
        self.type = type
    }
    var mtu: Int { base.mtu }
    var maxBurst: Int { base.maxBurst }
    var maxReceive: Int { base.maxReceive }
    var localRoute: RoutingInfo { base.localRoute }
    var stats: TransportStats { base.stats }
    func resolve(_ remote: RoutingInfo) -> RoutingInfo? { base.resolve(remote) }
    mutating func transmit(_ items: UnsafePointer<TxItem>, count: Int) -> Int {
        for i in 0..<count {
            let type = UInt8(truncatingIfNeeded: UInt64(littleEndian: items[i].header0) >> 8) & 0x03
            let packetNumber = UInt16(truncatingIfNeeded: UInt64(littleEndian: items[i].header1) >> 48)
            if losing.on && type == self.type.rawValue && packetNumber > 0 { continue }
            if base.transmit(items + i, count: 1) == 0 { return i }
        }
        return count
    }
    mutating func receive() -> Int { base.receive() }
    func received(_ index: Int) -> UnsafeMutableRawBufferPointer { base.received(index) }
}

/// Sends raw datagrams to a UDP port on loopback (a late copy of a real packet, or an attacker).
final class RawSender {
    let fd: Int32
    var address = sockaddr_in()
    init(port: UInt16) {
        fd = ee_udp_open(0x7F00_0001, 0, 0)
        withUnsafeMutableBytes(of: &address) { ee_make_sockaddr_in($0.baseAddress, 0x7F00_0001, port) }
    }
    deinit { close(fd) }
    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }
    func send(_ h: PacketHeader, payload: Int, fill: UInt8 = 0xAB) {
        var bytes = [UInt8](repeating: fill, count: Wire.headerSize + payload)
        bytes.withUnsafeMutableBytes { h.encode(to: $0.baseAddress!) }
        send(bytes)
    }
}

/// An encrypted pair whose transports drop, duplicate and reorder 3 % of the packets each and
/// record what they send, with short retransmission timeouts and a key update every
/// `keyUpdatePackets` packets (the client counts the server's answers too, so 128 rolls about as
/// often as 64 of the client's own did in an echo load, and retransmissions still fall within
/// one key epoch to be checked).
func lossyTappedPair(
    _ credentials: TestCredentials, seeds: (UInt64, UInt64), keyUpdatePackets: UInt64 = 128
) throws -> Pair<TapTransport<FaultInjectingTransport<UDPTransport>>> {
    var config = RpcConfig.encrypted()
    config.keyUpdatePackets = keyUpdatePackets
    config.retransmitTimeoutNs = 2_000_000
    let plan = FaultPlan(drop: 0.03, duplicate: 0.03, reorder: 0.03)
    return try Pair(
        server: TapTransport(FaultInjectingTransport(try UDPTransport(), plan: plan, seed: seeds.0)),
        client: TapTransport(FaultInjectingTransport(try UDPTransport(), plan: plan, seed: seeds.1)), config: config,
        tls: credentials.config("node-0"))
}

/// Nonce uniqueness in one sender's captured packets: within a key epoch (counted from phase
/// flips in the sender's own order), a (session, size, request, packet) number, which is what the
/// nonce is made of, always carries the same bytes. Returns the epochs seen, how many packets
/// repeated an earlier one (retransmissions, which must be byte-identical), and how many packets
/// shared (session, epoch, request, packet) with an earlier one of another size: RFRs asking for
/// runs of different lengths from one packet, which only the size in the nonce tells apart.
@discardableResult
func checkNonceUniqueness(_ capture: [[UInt8]]) -> (epochs: Int, repeats: Int, sizeOnly: Int) {
    var epoch = 0
    var phase = false
    var seen: [String: [UInt8]] = [:]
    var sizes: [String: UInt32] = [:]
    var repeats = 0
    var sizeOnly = 0
    for packet in capture {
        guard let h = header(of: packet, sealed: true) else { continue }
        if h.keyPhase != phase {
            phase = h.keyPhase
            epoch += 1
        }
        let numbers = "\(h.destSession)/\(epoch)/\(h.requestNumber)/\(h.packetNumber)"
        let id = numbers + "/\(h.messageSize)"
        if let earlier = seen[id] {
            repeats += 1
            #expect(earlier == packet, "nonce \(id) sealed two different packets")
        } else {
            seen[id] = packet
            if let size = sizes[numbers], size != h.messageSize { sizeOnly += 1 }
            sizes[numbers] = h.messageSize
        }
    }
    return (epoch, repeats, sizeOnly)
}

/// The header of a captured packet (`sealed`: the packet ends in an AEAD tag).
func header(of packet: [UInt8], sealed: Bool = false) -> PacketHeader? {
    packet.withUnsafeBytes {
        try? PacketHeader.parse($0.baseAddress!, length: packet.count, trailer: sealed ? Wire.tagSize : 0).get()
    }
}

/// A cluster's credentials in a fresh temporary directory, removed on deinit.
final class TestCredentials {
    let directory: String
    init(nodes: Int = 2, clients: Int = 1) throws {
        var template = Array("/tmp/eerpc-certs-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CryptoError.certificate("mkdtemp failed") }
        directory = String(cString: made)
        try ClusterCertificates.initialize(directory: directory, nodes: nodes, clients: clients)
    }
    deinit {
        if let dir = opendir(directory) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
                if name != "." && name != ".." { unlink(directory + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(directory)
    }
    func config(_ name: String) -> TLSConfig { TLSConfig(directory: directory, name: name) }
}

extension RpcConfig {
    /// Inline encryption with the given backend.
    static func encrypted(_ backend: AEADBackendKind = .preferred, algorithm: AEADAlgorithm = .aes128GCM) -> RpcConfig {
        var c = RpcConfig()
        c.crypto = .inline
        c.backend = backend
        c.algorithm = algorithm
        return c
    }
}

/// Whether a client with `client-0`'s certificate gets a session from node-0's `nexus` (the
/// listener still serves after whatever the test did to it).
func clientConnects(_ credentials: TestCredentials, to nexus: Nexus, server: Rpc<UDPTransport>) throws -> Bool {
    let clientNexus = try Nexus(tls: credentials.config("client-0"))
    defer { clientNexus.shutdown() }
    let client = try Rpc(nexus: clientNexus, id: 2, transport: try UDPTransport(), config: .encrypted())
    let s = try client.endpoint.createSession(host: "127.0.0.1", port: nexus.port, remoteRpcID: 1, peerName: "node-0")
    drive(client, server, timeoutNs: 10_000_000_000) { client.endpoint.sessionState(s) != .connecting }
    return client.endpoint.sessionState(s) == .connected
}
