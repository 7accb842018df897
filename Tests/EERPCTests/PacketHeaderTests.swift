import EERPC
import Testing

@Suite("Packet header codec")
struct PacketHeaderTests {
    private func parse(_ bytes: [UInt8]) -> Result<PacketHeader, DropReason> {
        bytes.withUnsafeBytes { PacketHeader.parse($0.baseAddress!, length: bytes.count) }
    }

    private func encode(_ h: PacketHeader, payload: Int = 0) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Wire.headerSize + payload)
        bytes.withUnsafeMutableBytes { h.encode(to: $0.baseAddress!) }
        return bytes
    }

    @Test("every field survives encode → parse")
    func roundTrip() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<10_000 {
            let type = PacketType(rawValue: UInt8(rng.next() % 4))!
            let rejected = type == .response && rng.next() % 4 == 0
            let h = PacketHeader(
                type: type, keyPhase: rng.next() & 1 == 1, rejected: rejected, destSession: UInt16(truncatingIfNeeded: rng.next()),
                requestType: UInt8(truncatingIfNeeded: rng.next()),
                messageSize: rejected ? 0 : UInt32(rng.next() % UInt64(Wire.maxMessageSize + 1)),
                requestNumber: rng.next() & PacketHeader.maxRequestNumber,
                packetNumber: UInt16(truncatingIfNeeded: rng.next()))
            let payload = (type == .request || type == .response) && !rejected ? 1 : 0
            #expect(try parse(encode(h, payload: payload)).get() == h)
        }
    }

    @Test("the layout is the documented one")
    func layout() {
        let h = PacketHeader(
            type: .response, keyPhase: true, destSession: 0x1234, requestType: 0x56, messageSize: 0x7F_0102,
            requestNumber: 0x0000_A1A2_A3A4_A5A6, packetNumber: 0xB1B2)
        #expect(
            encode(h) == [
                0xEE, 0x83, 0x34, 0x12, 0x56, 0x02, 0x01, 0x7F, 0xA6, 0xA5, 0xA4, 0xA3, 0xA2, 0xA1, 0xB2, 0xB1,
            ])
    }

    /// An RFR's size field: the run length in bits 0-7, the attempt in bits 8-22, so the
    /// largest of both stays a valid size (and the nonce, which covers the field, differs).
    @Test("an RFR's run length and attempt number survive encode → parse, at their limits")
    func requestForResponseFields() throws {
        #expect(Wire.sessionCredits < 1 << Wire.rfrCountBits)  // a whole credit window fits the count
        #expect((Wire.sessionCredits | Wire.maxRFRAttempt << Wire.rfrCountBits) <= Wire.maxMessageSize)
        for (count, attempt) in [(1, 0), (Wire.sessionCredits, 0), (7, 1), (Wire.sessionCredits, Wire.maxRFRAttempt)] {
            let h = PacketHeader.requestForResponse(
                destSession: 9, requestType: 2, requestNumber: 77, packetNumber: 5, count: count, attempt: attempt)
            let parsed = try parse(encode(h)).get()
            #expect(parsed.runCount == count && parsed.runAttempt == attempt)
            #expect(parsed.carriedMessageSize == 0)
            #expect(PacketHeader.carriedMessageSize(word0: h.words.0.littleEndian) == 0)
        }
        let response = PacketHeader(
            type: .response, destSession: 1, requestType: 1, messageSize: 65_536, requestNumber: 8, packetNumber: 1)
        #expect(response.carriedMessageSize == 65_536)
        #expect(PacketHeader.carriedMessageSize(word0: response.words.0.littleEndian) == 65_536)
    }

    @Test("the key-phase bit constant for TX descriptors is the one encode sets")
    func keyPhaseBit() {
        var h = PacketHeader(
            type: .response, destSession: 3, requestType: 4, messageSize: 5, requestNumber: 6, packetNumber: 7)
        let off = h.words.0
        h.keyPhase = true
        #expect((h.words.0 ^ off).littleEndian == PacketHeader.keyPhaseBitInWord0)
    }

    @Test("a header shorter than 16 bytes is rejected", arguments: 0..<Wire.headerSize)
    func truncated(length: Int) {
        let good = encode(PacketHeader(type: .requestForResponse, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 1))
        #expect(parse(Array(good.prefix(length))) == .failure(.truncated))
    }

    @Test("a wrong magic byte is rejected", arguments: [0x00, 0x01, 0xEF, 0xFF, 0x7E] as [UInt8])
    func badMagic(magic: UInt8) {
        var bytes = encode(PacketHeader(type: .request, destSession: 1, requestType: 1, messageSize: 1, requestNumber: 8, packetNumber: 0), payload: 1)
        bytes[0] = magic
        #expect(parse(bytes) == .failure(.badMagic))
    }

    @Test("reserved flag bits must be zero", arguments: 3...6)
    func reservedBits(bit: Int) {
        var bytes = encode(PacketHeader(type: .request, destSession: 1, requestType: 1, messageSize: 1, requestNumber: 8, packetNumber: 0), payload: 1)
        bytes[1] |= UInt8(1 << bit)
        #expect(parse(bytes) == .failure(.reservedBits))
    }

    @Test("the rejected flag is valid only on an empty response", arguments: [PacketType.request, .requestForResponse, .creditReturn])
    func rejectedFlag(type: PacketType) {
        var bytes = encode(PacketHeader(type: type, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 0), payload: type == .request ? 0 : 0)
        bytes[1] |= 0x04
        #expect(parse(bytes) == .failure(.reservedBits))
        let rejection = PacketHeader(type: .response, rejected: true, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 0)
        #expect((try? parse(encode(rejection)).get()) == rejection)
        #expect(parse(encode(rejection, payload: 4)) == .failure(.badPayloadLength))
    }

    @Test("a message size above 8 MiB is rejected", arguments: [Wire.maxMessageSize + 1, 0xFF_FFFF])
    func oversized(size: Int) {
        var bytes = encode(PacketHeader(type: .request, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 0), payload: 1)
        bytes[5] = UInt8(size & 0xFF)
        bytes[6] = UInt8((size >> 8) & 0xFF)
        bytes[7] = UInt8((size >> 16) & 0xFF)
        #expect(parse(bytes) == .failure(.oversizedMessage))
    }

    @Test("only a credit return may carry the handler-running mark, and it carries no message")
    func handlerRunningMark() throws {
        for type in [PacketType.request, .response, .requestForResponse, .creditReturn] {
            var bytes = encode(PacketHeader(type: type, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 2))
            bytes[5] = 0xFF
            bytes[6] = 0xFF
            bytes[7] = 0xFF
            if type == .creditReturn {
                let h = try parse(bytes).get()
                #expect(h.isHandlerRunningNotice)
                #expect(h.carriedMessageSize == 0, "a notice is never handed to the AES pool as a large message")
                #expect(PacketHeader.carriedMessageSize(word0: h.words.0.littleEndian) == 0)
            } else {
                #expect(parse(bytes) == .failure(.oversizedMessage))
            }
        }
        let plain = PacketHeader(type: .creditReturn, destSession: 1, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 2)
        #expect(!plain.isHandlerRunningNotice)
    }

    @Test("control packets carry no payload; data packets carry one", arguments: [PacketType.requestForResponse, .creditReturn, .request, .response])
    func payloadPresence(type: PacketType) {
        let h = PacketHeader(type: type, destSession: 1, requestType: 1, messageSize: 100, requestNumber: 8, packetNumber: 0)
        let isData = type == .request || type == .response
        #expect(parse(encode(h, payload: isData ? 0 : 1)) == .failure(.badPayloadLength))
        #expect((try? parse(encode(h, payload: isData ? 1 : 0)).get()) == h)
    }

    @Test("an empty message travels as one empty data packet")
    func emptyMessage() throws {
        let h = PacketHeader(type: .request, destSession: 3, requestType: 9, messageSize: 0, requestNumber: 8, packetNumber: 0)
        #expect(try parse(encode(h)).get() == h)
        #expect(Wire.packetCount(size: 0, dataPerPacket: 100) == 1)
        #expect(Wire.packetCount(size: 100, dataPerPacket: 100) == 1)
        #expect(Wire.packetCount(size: 101, dataPerPacket: 100) == 2)
    }
}
