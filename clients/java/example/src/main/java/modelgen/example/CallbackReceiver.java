package modelgen.example;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import modelgen.client.model.CallbackPayload;

/**
 * A callback endpoint on loopback, as a Java backend would run one: {@code POST /hook}
 * takes modelgen's deliveries, verifies each signature on the raw bytes before parsing
 * anything, answers 204 to a verified delivery and 401 to any other, and deduplicates on
 * {@code webhook-id} (modelgen sends the same id on every retry of one event).
 */
final class CallbackReceiver implements AutoCloseable {
    /** Largest body accepted, bytes: a callback carries ids, URLs and short texts. */
    static final int MAX_BODY_BYTES = 1 << 20;

    /** One verified delivery: the signed headers, the raw body, and the body read as the generated {@link CallbackPayload}. */
    record Delivery(String webhookId, String timestamp, String signature, byte[] body, CallbackPayload payload) {}

    private final HttpServer server;
    private final ExecutorService executor = Executors.newFixedThreadPool(2);
    private final WebhookVerifier verifier;
    private final ObjectMapper mapper;
    private final Map<String, CompletableFuture<Delivery>> byTask = new ConcurrentHashMap<>();
    private final Map<String, Boolean> seenIds = new ConcurrentHashMap<>();
    private final AtomicInteger accepted = new AtomicInteger();
    private final AtomicInteger rejected = new AtomicInteger();

    /** Listens on 127.0.0.1:{@code port} (0: any free port). */
    CallbackReceiver(int port, WebhookVerifier verifier, ObjectMapper mapper) throws IOException {
        this.verifier = verifier;
        this.mapper = mapper;
        this.server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 0);
        server.createContext("/hook", this::handle);
        server.setExecutor(executor);
        server.start();
    }

    /** The address to give modelgen as {@code CALLBACK_URL}. */
    String url() {
        return "http://127.0.0.1:" + server.getAddress().getPort() + "/hook";
    }

    /** Deliveries verified and accepted so far (retries of one event count once). */
    int accepted() {
        return accepted.get();
    }

    /** Requests refused so far (bad or missing signature, bad body). */
    int rejected() {
        return rejected.get();
    }

    /**
     * The first verified delivery for {@code taskId}, waiting up to {@code timeout}.
     *
     * @throws TimeoutException when none came in time
     */
    Delivery awaitTask(String taskId, Duration timeout) throws TimeoutException, InterruptedException {
        try {
            return futureFor(taskId).get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            throw new IllegalStateException("a delivery future never fails", e);
        }
    }

    private CompletableFuture<Delivery> futureFor(String taskId) {
        return byTask.computeIfAbsent(taskId, k -> new CompletableFuture<>());
    }

    private void handle(HttpExchange exchange) throws IOException {
        try (exchange) {
            if (!"POST".equals(exchange.getRequestMethod())) {
                reply(exchange, 405, "POST only");
                return;
            }
            byte[] body;
            try (InputStream in = exchange.getRequestBody()) {
                body = in.readNBytes(MAX_BODY_BYTES + 1);
            }
            if (body.length > MAX_BODY_BYTES) {
                rejected.incrementAndGet();
                reply(exchange, 413, "body too large");
                return;
            }
            var headers = exchange.getRequestHeaders(); // names compare case-insensitively
            String id = headers.getFirst("webhook-id");
            String timestamp = headers.getFirst("webhook-timestamp");
            String signature = headers.getFirst("webhook-signature");
            try {
                verifier.verify(id, timestamp, signature, body, Instant.now().getEpochSecond());
            } catch (WebhookVerifier.VerificationException e) {
                rejected.incrementAndGet();
                reply(exchange, 401, e.getMessage());
                return;
            }
            // Only now, with the bytes proven to be modelgen's, is the body parsed.
            CallbackPayload payload;
            try {
                payload = mapper.readValue(body, CallbackPayload.class);
            } catch (IOException e) {
                rejected.incrementAndGet();
                reply(exchange, 400, "body is not a callback payload");
                return;
            }
            if (seenIds.putIfAbsent(id, Boolean.TRUE) == null) {
                accepted.incrementAndGet();
                futureFor(payload.getTaskId()).complete(new Delivery(id, timestamp, signature, body, payload));
            }
            reply(exchange, 204, null);
        }
    }

    private static void reply(HttpExchange exchange, int status, String text) throws IOException {
        if (text == null) {
            exchange.sendResponseHeaders(status, -1);
            return;
        }
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        exchange.sendResponseHeaders(status, bytes.length);
        exchange.getResponseBody().write(bytes);
    }

    @Override
    public void close() {
        server.stop(0);
        executor.shutdownNow();
    }
}
