import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.apache.ignite.Ignite;
import org.apache.ignite.IgniteDataStreamer;
import org.apache.ignite.Ignition;
import org.apache.ignite.configuration.IgniteConfiguration;
import org.apache.ignite.spi.communication.tcp.TcpCommunicationSpi;
import org.apache.ignite.spi.discovery.tcp.TcpDiscoverySpi;
import org.apache.ignite.spi.discovery.tcp.ipfinder.vm.TcpDiscoveryVmIpFinder;

/**
 * Baseline for Kiln's warm rate: Ignite's own IgniteDataStreamer loading the same key/value pairs
 * (a tab-separated file) into the same node, as a client node. Prints "STREAMER_RATE entries/s".
 * Usage: java StreamerBench DATA.tsv DISCOVERY_PORT CACHE_NAME
 */
public class StreamerBench {
    public static void main(String[] args) throws Exception {
        Path data = Path.of(args[0]);
        int discoveryPort = Integer.parseInt(args[1]);
        String cacheName = args[2];
        List<String[]> rows = new ArrayList<>();
        for (String line : Files.readAllLines(data)) {
            int tab = line.indexOf('\t');
            rows.add(new String[] {line.substring(0, tab), line.substring(tab + 1)});
        }
        TcpDiscoveryVmIpFinder finder = new TcpDiscoveryVmIpFinder();
        finder.setAddresses(List.of("127.0.0.1:" + discoveryPort + ".." + (discoveryPort + 9)));
        TcpDiscoverySpi discovery = new TcpDiscoverySpi();
        discovery.setIpFinder(finder);
        discovery.setLocalAddress("127.0.0.1");
        discovery.setLocalPort(discoveryPort + 100);
        TcpCommunicationSpi communication = new TcpCommunicationSpi();
        communication.setLocalAddress("127.0.0.1");
        communication.setLocalPort(discoveryPort - 300);
        IgniteConfiguration cfg = new IgniteConfiguration()
            .setIgniteInstanceName("kiln-bench-client")
            .setClientMode(true)
            .setDiscoverySpi(discovery)
            .setCommunicationSpi(communication);
        try (Ignite ignite = Ignition.start(cfg)) {
            ignite.getOrCreateCache(cacheName);
            long start = System.nanoTime();
            try (IgniteDataStreamer<String, String> streamer = ignite.dataStreamer(cacheName)) {
                for (String[] row : rows) {
                    streamer.addData(row[0], row[1]);
                }
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            long size = ignite.cache(cacheName).size();
            System.out.printf("STREAMER_RATE %.0f entries=%d seconds=%.3f%n", rows.size() / seconds, size, seconds);
            ignite.destroyCache(cacheName);
        }
    }
}
