import CSystemShims
import Foundation
import Testing
import YCSB
import YCSBBindings

/// A one-connection TCP server on 127.0.0.1 that answers each command it receives with the next
/// of `replies` after that reply's delay, then keeps the connection open until stopped.
final class ScriptedRESPServer: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let done = DispatchSemaphore(value: 0)

    init(replies: [(delayMs: Int, bytes: String)]) {
        listener = ee_tcp_listen(0x7F00_0001, 0)
        port = UInt16(ee_socket_port(listener))
        let listener = listener
        let done = done
        Thread.detachNewThread {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else {
                done.signal()
                return
            }
            var buffer = [UInt8](repeating: 0, count: 4_096)
            for reply in replies {
                guard recv(fd, &buffer, buffer.count, 0) > 0 else { break }
                usleep(UInt32(reply.delayMs * 1_000))
                _ = reply.bytes.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            }
            done.wait()
            close(fd)
        }
    }

    deinit {
        done.signal()
        close(listener)
    }
}

@Suite("RESP connection after an error")
struct RESPConnectionBreakTests {
    @Test("a reply that arrives after the read timed out is not taken as the next command's answer")
    func lateReply() throws {
        let server = ScriptedRESPServer(replies: [(delayMs: 400, bytes: "+LATE\r\n"), (delayMs: 0, bytes: "+NEXT\r\n")])
        let c = try RESPConnection(host: "127.0.0.1", port: server.port, tls: nil, timeoutMs: 150)
        #expect(throws: RESPError.self) { try c.command("GET", "first") }
        usleep(400_000)  // the late reply is in the socket now
        do {
            let reply = try c.command("GET", "second")
            Issue.record("the broken connection answered \(reply)")
        } catch let error as RESPError {
            guard case .broken = error else { Issue.record("\(error)"); return }
        }
        #expect(c.brokenBy?.contains("timed out") == true, "\(c.brokenBy ?? "not broken")")
    }

    @Test("after a malformed reply every later command fails, synchronous or pipelined")
    func protocolError() throws {
        // A bulk string whose length is not a number, then what would look like a good reply.
        let server = ScriptedRESPServer(replies: [(delayMs: 0, bytes: "$x\r\n+OK\r\n"), (delayMs: 0, bytes: "+OK\r\n")])
        let c = try RESPConnection(host: "127.0.0.1", port: server.port, tls: nil, timeoutMs: 2_000)
        #expect(throws: RESPError.self) { try c.command("PING") }
        #expect(throws: RESPError.self) { try c.command("PING") }
        let db = RedisDatabase(connection: c)
        #expect(throws: RESPError.self) { _ = try db.read(key: "k", field: nil) }
        var result: Result<Bool, any Error>?
        db.start(.read(key: "k", field: nil)) { result = $0 }
        for _ in 0..<3 where result == nil { db.poll() }
        guard case .failure(let error as RESPError) = result, case .broken = error else {
            Issue.record("\(String(describing: result))")
            return
        }
    }

    @Test("an error reply from the server leaves the connection usable")
    func serverErrorKeepsConnection() throws {
        let server = ScriptedRESPServer(replies: [(delayMs: 0, bytes: "-ERR wrong type\r\n"), (delayMs: 0, bytes: "+PONG\r\n")])
        let c = try RESPConnection(host: "127.0.0.1", port: server.port, tls: nil, timeoutMs: 2_000)
        #expect(throws: RESPError.self) { try c.command("INCR", "k") }
        #expect(try c.command("PING") == .simple("PONG"))
        #expect(c.brokenBy == nil)
    }

    @Test(
        "malformed replies are protocol errors at once, not a shifted stream, a wait or a trap",
        arguments: [
            ("$3\r\nabcXY:1\r\n", "CRLF"),  // the bulk length is wrong: its CRLF is not where it says
            (":1\n", "CRLF"),  // a bare LF
            ("$9223372036854775807\r\n", "bulk length"),  // would overflow length + 2
            ("*9223372036854775807\r\n", "array length"),  // would reserve that much
        ])
    func malformedReply(reply: String, complaint: String) throws {
        let server = ScriptedRESPServer(replies: [(delayMs: 0, bytes: reply)])
        let c = try RESPConnection(host: "127.0.0.1", port: server.port, tls: nil, timeoutMs: 5_000)
        let began = Date()
        #expect {
            try c.command("PING")
        } throws: { error in
            guard let e = error as? RESPError, case .protocolError(let why) = e else { return false }
            return why.contains(complaint)
        }
        #expect(Date().timeIntervalSince(began) < 2, "the error waited for the read timeout")
        #expect(c.brokenBy != nil)
    }
}
