import EERPC
import Testing

@Suite("RPC over UDP loopback")
struct RpcTests {
    @Test("a single-packet RPC round-trips", arguments: [0, 1, 32, Wire.dataPerPacket(mtu: Wire.defaultMTU)])
    func singlePacket(size: Int) throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        var request = e.allocate(size: size)!
        fill(&request, size: size, seed: 42)
        let response = e.allocate(size: size)!
        var result: MsgBuffer? = nil
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { c in
            #expect(c.status == .ok)
            result = c.response
        }
        #expect(pair.pump { result != nil })
        #expect(sameBytes(result!, request))
        e.free(request)
        e.free(response)
    }
}
