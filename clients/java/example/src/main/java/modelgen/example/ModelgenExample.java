package modelgen.example;

import java.io.IOException;
import java.math.BigDecimal;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import modelgen.client.ApiClient;
import modelgen.client.ApiException;
import modelgen.client.api.ModelsApi;
import modelgen.client.api.TasksApi;
import modelgen.client.model.Angle;
import modelgen.client.model.AspectRatio;
import modelgen.client.model.BodyProfileDto;
import modelgen.client.model.BodyProfileDtoAge;
import modelgen.client.model.BodyProfileDtoHeightCm;
import modelgen.client.model.BodyProfileDtoWeightKg;
import modelgen.client.model.CallbackEventType;
import modelgen.client.model.CallbackPayload;
import modelgen.client.model.CreateDefaultRequest;
import modelgen.client.model.CreateEditRequest;
import modelgen.client.model.CreateOutfitRequest;
import modelgen.client.model.EnvelopeCreatedTask;
import modelgen.client.model.EnvelopeTaskView;
import modelgen.client.model.Gender;
import modelgen.client.model.TaskStatus;
import modelgen.client.model.TaskView;

/**
 * The whole flow of modelgen through the generated client: create a default model from a
 * front photo, wait for it, edit it, dress it (one garment, seen from the side), and
 * receive each task's signed callback on a loopback endpoint, verifying every signature
 * and refusing tampered copies.
 *
 * <p>Usage: {@code java -cp <classes>:<jackson jars> modelgen.example.ModelgenExample
 * PHOTO.jpg GARMENT.jpg}. Environment: {@code MODELGEN_BASE_URL} (default
 * {@code http://127.0.0.1:8000}), {@code CALLBACK_PORT} (the port of modelgen's
 * {@code CALLBACK_URL}, {@code http://127.0.0.1:PORT/hook}; default 9000),
 * {@code CALLBACK_SIGNING_SECRET} (modelgen's; required), {@code MODELGEN_API_TOKEN}
 * (when modelgen has {@code API_AUTH_TOKEN}). Exits 0 when every step and check passed,
 * 1 otherwise.
 */
public final class ModelgenExample {
    /** How long one task may take from creation to its terminal state. */
    private static final Duration TASK_DEADLINE = Duration.ofSeconds(90);
    /** How long a task's callback may take after the task ended (retries start at once). */
    private static final Duration CALLBACK_DEADLINE = Duration.ofSeconds(30);
    /**
     * Seconds one {@code GET /tasks/{id}?wait=N} may hold the request until the task ends
     * (README, "Waiting for a result"); below the client's read timeout.
     */
    private static final long WAIT_SECONDS = 20;
    /** Pause after an answer that came back early with the task still running (waiters full). */
    private static final Duration RETRY_PAUSE = Duration.ofMillis(250);
    private static final Set<TaskStatus> TERMINAL = Set.of(TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED);
    private static final byte[] PNG_SIGNATURE = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

    private final ModelsApi models;
    private final TasksApi tasks;
    private final CallbackReceiver receiver;
    private final WebhookVerifier verifier;
    private final HttpClient http = HttpClient.newHttpClient();

    private ModelgenExample(ApiClient client, CallbackReceiver receiver, WebhookVerifier verifier) {
        this.models = new ModelsApi(client);
        this.tasks = new TasksApi(client);
        this.receiver = receiver;
        this.verifier = verifier;
    }

    public static void main(String[] args) {
        try {
            run(args);
            System.out.println("OK: default model, edit and outfit completed; 3 signed callbacks verified, 4 forgeries refused");
        } catch (ApiException e) {
            System.err.println("FAILED: modelgen answered HTTP " + e.getCode() + ": " + e.getResponseBody());
            System.exit(1);
        } catch (Exception | AssertionError e) {
            System.err.println("FAILED: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length != 2) {
            throw new IllegalArgumentException("usage: ModelgenExample PHOTO.jpg GARMENT.jpg");
        }
        String photo = dataUri(Path.of(args[0]));
        String garment = dataUri(Path.of(args[1]));
        String secret = System.getenv("CALLBACK_SIGNING_SECRET");
        if (secret == null || secret.isEmpty()) {
            throw new IllegalArgumentException("CALLBACK_SIGNING_SECRET is not set");
        }
        int port = Integer.parseInt(envOr("CALLBACK_PORT", "9000"));

        ApiClient client = new ApiClient();
        client.updateBaseUri(envOr("MODELGEN_BASE_URL", "http://127.0.0.1:8000"));
        client.setConnectTimeout(Duration.ofSeconds(5));
        client.setReadTimeout(Duration.ofSeconds(40));
        String token = System.getenv("MODELGEN_API_TOKEN");
        if (token != null && !token.isEmpty()) {
            client.setRequestInterceptor(b -> b.header("Authorization", "Bearer " + token));
        }

        WebhookVerifier verifier = new WebhookVerifier(secret);
        try (CallbackReceiver receiver = new CallbackReceiver(port, verifier, client.getObjectMapper())) {
            System.out.println("callbacks expected at " + receiver.url());
            new ModelgenExample(client, receiver, verifier).flow(photo, garment);
        }
    }

    private void flow(String photo, String garment) throws Exception {
        String user = "java-example";
        String run = UUID.randomUUID().toString();

        // 1. A default model from the front photo and a body profile.
        CreateDefaultRequest create = new CreateDefaultRequest()
                .userId(user)
                .userImage(photo)
                .bodyProfile(new BodyProfileDto()
                        .gender(Gender.FEMALE)
                        .heightCm(new BodyProfileDtoHeightCm(new BigDecimal("168")))
                        .weightKg(new BodyProfileDtoWeightKg(new BigDecimal("55")))
                        .age(new BodyProfileDtoAge(30))
                        .skinTone("light"))
                .size(AspectRatio._3_4);
        String modelId = accepted(models.createDefault(create, "java-" + run + "-default"));
        TaskView model = awaitCompleted(modelId);
        CallbackPayload modelCallback = checkCallback(model);
        checkImage(model.getImage().getImageUrl());
        refuseForgeries(receiver.awaitTask(modelId, CALLBACK_DEADLINE));

        // 2. An edit of that model.
        CreateEditRequest edit = new CreateEditRequest()
                .userId(user)
                .baseModelTaskId(modelId)
                .editInstructions("shorter hair, smiling");
        String editId = accepted(models.createEdit(edit, "java-" + run + "-edit"));
        TaskView edited = awaitCompleted(editId);
        check(modelId.equals(edited.getBaseModelTaskId()), "the edit names its base model");
        checkCallback(edited);

        // 3. The edited model dressed in one garment, seen from the side.
        CreateOutfitRequest outfit = new CreateOutfitRequest()
                .userId(user)
                .baseModelTaskId(editId)
                .angle(Angle.SIDE)
                .outfitImages(List.of(garment))
                .outfitDescription("white T-shirt");
        String outfitId = accepted(models.createOutfit(outfit, "java-" + run + "-outfit"));
        TaskView dressed = awaitCompleted(outfitId);
        check(dressed.getAngle() == Angle.SIDE, "the outfit task keeps its angle");
        CallbackPayload outfitCallback = checkCallback(dressed);
        check(outfitCallback.getAngle() == Angle.SIDE, "the outfit callback carries the angle");
        checkImage(dressed.getImage().getImageUrl());

        check(modelCallback.getAngle() == null, "a default model's callback has no angle");
        check(receiver.accepted() == 3, "3 deliveries accepted, got " + receiver.accepted());
        check(receiver.rejected() == 4, "4 forgeries refused, got " + receiver.rejected());
    }

    /** The task id of a create's answer (202, or 200 for an idempotent replay). */
    private static String accepted(EnvelopeCreatedTask answer) {
        check(answer.getCode() == 0, "create answered code " + answer.getCode() + ": " + answer.getMsg());
        String id = answer.getData().getTaskId();
        System.out.println("created " + id + " (" + answer.getData().getStatus() + ")");
        return id;
    }

    /**
     * Waits for the task to end, with {@code ?wait=} (no polling loop while the service holds
     * the request); fails unless it completed with an image.
     */
    private TaskView awaitCompleted(String taskId) throws ApiException, InterruptedException {
        Instant end = Instant.now().plus(TASK_DEADLINE);
        String last = "";
        while (true) {
            EnvelopeTaskView answer = tasks.getTask(taskId, null, WAIT_SECONDS, null);
            check(answer.getCode() == 0, "GET /tasks/" + taskId + " answered code " + answer.getCode());
            TaskView view = answer.getData();
            String now = view.getStatus() + " " + view.getProgress() + "%";
            if (!now.equals(last)) {
                System.out.println("  " + taskId + ": " + now);
                last = now;
            }
            if (TERMINAL.contains(view.getStatus())) {
                check(view.getStatus() == TaskStatus.COMPLETED,
                        taskId + " ended " + view.getStatus() + " (" + view.getErrorCode() + ": " + view.getErrorMessage() + ")");
                check(view.getImage() != null && !view.getImages().isEmpty(), taskId + " completed without an image");
                return view;
            }
            check(Instant.now().isBefore(end), taskId + " still " + view.getStatus() + " after " + TASK_DEADLINE);
            Thread.sleep(RETRY_PAUSE.toMillis());
        }
    }

    /** Waits for the task's verified callback and checks that it tells what the task view tells. */
    private CallbackPayload checkCallback(TaskView view) throws Exception {
        CallbackReceiver.Delivery delivery = receiver.awaitTask(view.getTaskId(), CALLBACK_DEADLINE);
        CallbackPayload callback = delivery.payload();
        System.out.println("  callback " + delivery.webhookId() + " verified: " + callback.getEventType());
        check(delivery.webhookId().startsWith("evt_"), "webhook-id is an event id");
        check(callback.getEventType() == CallbackEventType.TASK_COMPLETED, "event_type is task.completed");
        check(view.getStatus().getValue().equals(callback.getStatus().getValue()), "callback status matches the task");
        check(view.getType() == callback.getType(), "callback type matches the task");
        check(view.getUserId().equals(callback.getUserId()), "callback user_id matches the task");
        URI imageUrl = view.getImage().getImageUrl();
        check(callback.getImage() != null && imageUrl.equals(callback.getImage().getImageUrl()), "callback image matches the task's image");
        check(imageUrl.equals(callback.getImageUrl()), "callback image_url (the flat, earlier field) matches too");
        check(callback.getImages().size() == view.getImages().size(), "callback lists as many images as the task");
        return callback;
    }

    /** The image URL serves a PNG. */
    private void checkImage(URI url) throws IOException, InterruptedException {
        HttpResponse<byte[]> image = http.send(HttpRequest.newBuilder(url).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofByteArray());
        check(image.statusCode() == 200, "GET " + url + " answered " + image.statusCode());
        byte[] head = Arrays.copyOf(image.body(), PNG_SIGNATURE.length);
        check(Arrays.equals(head, PNG_SIGNATURE), "the image at " + url + " is a PNG");
    }

    /**
     * Sends altered copies of a real delivery to our own endpoint: each must be refused
     * (401), and the unaltered replay accepted without counting twice. The last copy is
     * correctly signed but stamped 6 minutes ago: a captured request replayed later.
     */
    private void refuseForgeries(CallbackReceiver.Delivery real) throws IOException, InterruptedException {
        String body = new String(real.body(), StandardCharsets.UTF_8);
        String forged = body.replace("\"status\":\"completed\"", "\"status\":\"failed\"");
        check(!forged.equals(body), "the delivery has a status to tamper with");
        int before = receiver.accepted();
        check(post(real.webhookId(), real.timestamp(), real.signature(), forged.getBytes(StandardCharsets.UTF_8)) == 401,
                "a tampered body is refused");
        String later = Long.toString(Long.parseLong(real.timestamp()) + 1);
        check(post(real.webhookId(), later, real.signature(), real.body()) == 401, "a changed timestamp is refused");
        check(post(real.webhookId(), real.timestamp(), null, real.body()) == 401, "an unsigned body is refused");
        String stale = Long.toString(Instant.now().getEpochSecond() - WebhookVerifier.TOLERANCE_SECONDS - 60);
        String staleSignature = "v1," + Base64.getEncoder().encodeToString(verifier.sign(real.webhookId(), stale, real.body()));
        check(post(real.webhookId(), stale, staleSignature, real.body()) == 401, "a correctly signed but stale delivery is refused");
        check(post(real.webhookId(), real.timestamp(), real.signature(), real.body()) == 204, "the genuine delivery verifies again");
        check(receiver.accepted() == before, "a replayed event id is not counted twice");
        System.out.println("  forged copies refused, replay deduplicated");
    }

    private int post(String id, String timestamp, String signature, byte[] body) throws IOException, InterruptedException {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(receiver.url()))
                .timeout(Duration.ofSeconds(10))
                .header("Content-Type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp)
                .POST(HttpRequest.BodyPublishers.ofByteArray(body));
        if (signature != null) {
            request.header("webhook-signature", signature);
        }
        return http.send(request.build(), HttpResponse.BodyHandlers.discarding()).statusCode();
    }

    private static String dataUri(Path jpeg) throws IOException {
        return "data:image/jpeg;base64," + Base64.getEncoder().encodeToString(Files.readAllBytes(jpeg));
    }

    private static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    /** An assertion that holds whether or not the JVM runs with {@code -ea}. */
    private static void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }
}
