import CCryptoShims
import CSystemShims
import Glibc

/// One session-management exchange: a TCP connection, with TLS 1.3 on it when the Nexus has
/// credentials. Owned by whoever holds it until `close()`, which frees the TLS state and the
/// socket; used by one thread at a time (the reader thread, then the dispatch thread).
struct SessionManagementConnection: @unchecked Sendable {
    let fd: Int32
    /// The OpenSSL connection (`SSL *`), nil for plain TCP.
    let tls: UnsafeMutableRawPointer?

    /// Server side: runs the TLS handshake (if configured) on an accepted socket. On failure the
    /// reason is returned and the socket is left open for the caller to close.
    static func accept(fd: Int32, contexts: TLSContexts?) -> Result<SessionManagementConnection, SessionError> {
        guard let contexts else { return .success(SessionManagementConnection(fd: fd, tls: nil)) }
        var message = [CChar](repeating: 0, count: 512)
        guard let ssl = ee_tls_handshake(contexts.server, fd, 1, nil, &message, 512) else {
            return .failure(.handshakeFailed(String(nulTerminated: message)))
        }
        return .success(SessionManagementConnection(fd: fd, tls: ssl))
    }

    /// Client side: connects and runs the TLS handshake (if configured), refusing a server whose
    /// certificate is not issued to `peerName` (when given). The socket is registered with
    /// `gate` from the connect on, for `deadlineMs`: each read's timeout alone would let a server
    /// answering a byte at a time hold the exchange for ever. The caller releases it from the
    /// gate before closing it.
    static func connect(
        ip: UInt32, port: UInt16, timeoutMs: Int32, contexts: TLSContexts?, peerName: String?,
        gate: SessionManagementGate, deadlineMs: Int32
    ) -> Result<SessionManagementConnection, SessionError> {
        let fd = ee_tcp_connect(ip, port, timeoutMs)
        if fd < 0 { return .failure(fd == -ETIMEDOUT ? .timedOut : .connectFailed(errno: -fd)) }
        _ = gate.admit(fd, deadlineMs: deadlineMs)  // a gate without a limit admits every socket
        guard let contexts else { return .success(SessionManagementConnection(fd: fd, tls: nil)) }
        var message = [CChar](repeating: 0, count: 512)
        guard let ssl = ee_tls_handshake(contexts.client, fd, 0, peerName, &message, 512) else {
            gate.release(fd)
            Glibc.close(fd)
            return .failure(.handshakeFailed(String(nulTerminated: message)))
        }
        return .success(SessionManagementConnection(fd: fd, tls: ssl))
    }

    func send(_ message: SessionManagementMessage) -> Bool {
        withUnsafeTemporaryAllocation(byteCount: SessionManagementMessage.size, alignment: 8) { buffer in
            message.encode(to: buffer.baseAddress!)
            if let tls { return ee_tls_write_all(tls, buffer.baseAddress, SessionManagementMessage.size) == 0 }
            return ee_write_all(fd, buffer.baseAddress, SessionManagementMessage.size) == 0
        }
    }

    /// Reads one message; nil on timeout, EOF, or a malformed message.
    func receive() -> SessionManagementMessage? {
        if case .success(let m) = receiveOrExplain() { return m }
        return nil
    }

    /// Reads one message, or says why there is none. In TLS 1.3 the client's side of the
    /// handshake completes before the server has checked its certificate, so a refusal shows up
    /// here, as an alert in place of the answer.
    func receiveOrExplain() -> Result<SessionManagementMessage, SessionError> {
        var message = [CChar](repeating: 0, count: 256)
        return withUnsafeTemporaryAllocation(byteCount: SessionManagementMessage.size, alignment: 8) { buffer in
            let r =
                if let tls { ee_tls_read_exact(tls, buffer.baseAddress, SessionManagementMessage.size, &message, 256) }
                else { ee_read_exact(fd, buffer.baseAddress, SessionManagementMessage.size) }
            if r == 0 {
                guard let m = SessionManagementMessage.decode(buffer.baseAddress!) else {
                    if let v = SessionManagementMessage.foreignVersion(buffer.baseAddress!) {
                        return .failure(.versionMismatch(peer: v))
                    }
                    return .failure(.protocolError)
                }
                return .success(m)
            }
            if r == -2 { return .failure(.handshakeFailed(String(nulTerminated: message))) }
            if r == -3 { return .failure(.protocolError) }  // closed without an answer: not a timeout
            if r == -Int32(EAGAIN) || tls != nil { return .failure(.timedOut) }
            return .failure(.protocolError)
        }
    }

    /// The data-plane secrets of a session, from the TLS exporter (RFC 8446 §7.5); nil without TLS.
    func exportSecrets(clientSession: UInt16, serverSession: UInt16, token: UInt64, clientRpcID: UInt8, serverRpcID: UInt8)
        -> SessionSecrets?
    {
        guard let tls else { return nil }
        var context = [UInt8](repeating: 0, count: 14)
        context[0] = UInt8(truncatingIfNeeded: clientSession)
        context[1] = UInt8(truncatingIfNeeded: clientSession >> 8)
        context[2] = UInt8(truncatingIfNeeded: serverSession)
        context[3] = UInt8(truncatingIfNeeded: serverSession >> 8)
        for i in 0..<8 { context[4 + i] = UInt8(truncatingIfNeeded: token >> (8 * UInt64(i))) }
        context[12] = clientRpcID
        context[13] = serverRpcID
        var secrets = SessionSecrets()
        let ok = withUnsafeMutableBytes(of: &secrets) { out in
            ee_tls_export(
                tls, SessionSecrets.exporterLabel, context, context.count,
                out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count)
        }
        return ok == 1 ? secrets : nil
    }

    /// SHA-256 of the peer's certificate: who is on the other end (nil without TLS).
    func peerFingerprint() -> CertificateFingerprint? {
        guard let tls else { return nil }
        var fingerprint = CertificateFingerprint()
        let ok = withUnsafeMutableBytes(of: &fingerprint.words) {
            ee_tls_peer_fingerprint(tls, $0.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return ok == 1 ? fingerprint : nil
    }

    func close() {
        if let tls { ee_tls_free(tls) }
        Glibc.close(fd)
    }
}

/// A certificate's SHA-256 digest, compared whole.
struct CertificateFingerprint: Equatable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    static func == (a: Self, b: Self) -> Bool { a.words == b.words }
}
