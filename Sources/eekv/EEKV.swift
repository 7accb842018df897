import ArgumentParser
import Glibc

@main
struct EEKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eekv",
        abstract: "eekv: a sharded key-value store on eeRPC, an encrypted eRPC-class datacenter RPC runtime.",
        subcommands: [Server.self, Put.self, Get.self, Del.self, Scan.self, MGet.self, Merge.self, Fields.self, YCSBCommand.self, Certs.self, Bench.self]
    )

    /// Usage errors exit with 2 (ArgumentParser's default is 64), as the client commands document.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                let message = fullMessage(for: error)
                _ = (message + "\n").withCString { write(2, $0, strlen($0)) }
                Glibc.exit(ClientExit.usage)
            }
            exit(withError: error)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that report figures as ratios against a reference measured in the same run.",
        subcommands: [BenchRPC.self, BenchAES.self, BenchAEAD.self, BenchCopy.self, BenchKV.self, BenchStore.self, BenchReport.self]
    )
}
