import CSystemShims
import Glibc
import Testing

@testable import EERPC

/// The UDP transport's batching: runs of same-size packets to one address go out as UDP GSO
/// sends, and every datagram still arrives whole, in order, at the right socket.
@Suite("UDP transport")
struct UDPTransportTests {
    /// A burst mixing destinations and lengths: 9 equal packets then a shorter one to `b`
    /// (one GSO run), 3 to `c`, then back to `b` a length that rises (its own send) and one
    /// that falls (a run of two).
    static let plan: [(toB: Bool, length: Int)] =
        Array(repeating: (true, 1_000), count: 9) + [(true, 300)] + Array(repeating: (false, 700), count: 3)
        + [(true, 100), (true, 200), (true, 0)]

    func burst(gso: Bool) throws -> (sender: TransportStats, b: [[UInt8]], c: [[UInt8]], offload: Bool) {
        var a = try UDPTransport(gso: gso)
        var b = try UDPTransport()
        var c = try UDPTransport()
        let routeB = UnsafeMutablePointer<RoutingInfo>.allocate(capacity: 2)
        defer { routeB.deallocate() }
        routeB[0] = a.resolve(b.localRoute)!
        routeB[1] = a.resolve(c.localRoute)!
        // Payload bytes: packet index in every byte, so a datagram cut at the wrong place shows.
        let payload = UnsafeMutableRawPointer.allocate(byteCount: 1_000 * Self.plan.count, alignment: 8)
        defer { payload.deallocate() }
        var items: [TxItem] = []
        for (i, p) in Self.plan.enumerated() {
            let data = payload + i * 1_000
            data.initializeMemory(as: UInt8.self, repeating: UInt8(i), count: 1_000)
            let header = PacketHeader(
                type: .request, destSession: 1, requestType: 1, messageSize: UInt32(p.length), requestNumber: UInt64(i),
                packetNumber: 0)
            items.append(TxItem(header: header, data: data, dataLength: p.length, route: routeB + (p.toB ? 0 : 1)))
        }
        let sent = items.withUnsafeBufferPointer { a.transmit($0.baseAddress!, count: $0.count) }
        #expect(sent == Self.plan.count)
        func drain(_ t: inout UDPTransport, _ expected: Int) -> [[UInt8]] {
            var got: [[UInt8]] = []
            let deadline = ee_now_ns() + 2_000_000_000
            while got.count < expected && ee_now_ns() < deadline {
                let n = t.receive()
                for k in 0..<n { got.append(Array(t.received(k))) }
            }
            return got
        }
        let toB = drain(&b, Self.plan.filter(\.toB).count)
        let toC = drain(&c, Self.plan.filter { !$0.toB }.count)
        return (a.stats, toB, toC, a.segmentationOffload)
    }

    func check(_ datagrams: [[UInt8]], indices: [Int]) {
        #expect(datagrams.count == indices.count)
        for (d, i) in zip(datagrams, indices) {
            #expect(d.count == Wire.headerSize + Self.plan[i].length)
            #expect(d.dropFirst(Wire.headerSize).allSatisfy { $0 == UInt8(i) })
        }
    }

    @Test("same-size runs leave as GSO sends and arrive as the same datagrams")
    func segmented() throws {
        let r = try burst(gso: true)
        check(r.b, indices: Self.plan.indices.filter { Self.plan[$0].toB })
        check(r.c, indices: Self.plan.indices.filter { !Self.plan[$0].toB })
        #expect(r.sender.txPackets == UInt64(Self.plan.count))
        // Loopback takes UDP GSO on every Linux this project supports (4.18 on): the run of ten
        // to `b`, the run of three to `c`, and the 200-byte packet with the empty one after it
        // each went as one send.
        #expect(r.offload)
        #expect(r.sender.txSegmentedSends == 3)
    }

    @Test("without GSO every packet is its own send, with the same result")
    func unsegmented() throws {
        let r = try burst(gso: false)
        check(r.b, indices: Self.plan.indices.filter { Self.plan[$0].toB })
        check(r.c, indices: Self.plan.indices.filter { !Self.plan[$0].toB })
        #expect(r.sender.txSegmentedSends == 0)
        #expect(r.sender.txPackets == UInt64(Self.plan.count))
    }
}
