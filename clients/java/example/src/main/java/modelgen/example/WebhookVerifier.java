package modelgen.example;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Verifies the signature of a modelgen callback: Standard Webhooks' symmetric scheme
 * (https://www.standardwebhooks.com/, "Signature scheme"), as modelgen signs it
 * (crates/callback/src/signing.rs; README, "Verifying the signature (Java)").
 *
 * <p>The signed content is {@code "{webhook-id}.{webhook-timestamp}.{raw body}"}; the
 * signature is the standard, padded base64 of its HMAC-SHA256 under the key, sent in
 * {@code webhook-signature} as one or more space-separated {@code v1,<base64>} entries.
 * Verify the body bytes exactly as received, before parsing them.
 */
public final class WebhookVerifier {
    /** Largest distance, in seconds, between {@code webhook-timestamp} and our clock. */
    public static final long TOLERANCE_SECONDS = 300;

    private static final String SECRET_PREFIX = "whsec_";
    private static final String ALGORITHM = "HmacSHA256";

    private final byte[] key;

    /**
     * @param secret modelgen's {@code CALLBACK_SIGNING_SECRET}: {@code whsec_<base64>} (the
     *     key is the decoded part after the prefix) or any other text (the key is its UTF-8
     *     bytes)
     * @throws IllegalArgumentException when the key would be empty or the base64 is invalid
     */
    public WebhookVerifier(String secret) {
        byte[] k = secret.startsWith(SECRET_PREFIX)
                ? Base64.getDecoder().decode(secret.substring(SECRET_PREFIX.length()))
                : secret.getBytes(StandardCharsets.UTF_8);
        if (k.length == 0) {
            throw new IllegalArgumentException("the signing secret is empty");
        }
        this.key = k;
    }

    /** Why a delivery was refused; never contains the secret. */
    public static final class VerificationException extends Exception {
        private static final long serialVersionUID = 1L;

        VerificationException(String reason) {
            super(reason);
        }
    }

    /**
     * Checks one delivery.
     *
     * @param webhookId the {@code webhook-id} header
     * @param timestamp the {@code webhook-timestamp} header, Unix seconds
     * @param signatures the {@code webhook-signature} header
     * @param body the raw request body
     * @param nowSeconds the receiver's clock, Unix seconds
     * @throws VerificationException when a header is missing, the timestamp is not an
     *     integer or is more than {@link #TOLERANCE_SECONDS} away from {@code nowSeconds},
     *     or no {@code v1} entry matches
     */
    public void verify(String webhookId, String timestamp, String signatures, byte[] body, long nowSeconds)
            throws VerificationException {
        if (webhookId == null || timestamp == null || signatures == null) {
            throw new VerificationException("missing webhook-id, webhook-timestamp or webhook-signature");
        }
        long sentAt;
        try {
            sentAt = Long.parseLong(timestamp);
        } catch (NumberFormatException e) {
            throw new VerificationException("webhook-timestamp is not an integer");
        }
        if (Math.abs(nowSeconds - sentAt) > TOLERANCE_SECONDS) {
            throw new VerificationException("webhook-timestamp is too far from our clock");
        }
        byte[] expected = sign(webhookId, timestamp, body);
        for (String entry : signatures.split(" ")) {
            int comma = entry.indexOf(',');
            if (comma < 0 || !entry.substring(0, comma).equals("v1")) {
                continue; // another scheme version: not ours to judge
            }
            byte[] given;
            try {
                given = Base64.getDecoder().decode(entry.substring(comma + 1));
            } catch (IllegalArgumentException e) {
                continue;
            }
            // Constant time: the time taken tells an attacker nothing about how many bytes matched.
            if (MessageDigest.isEqual(expected, given)) {
                return;
            }
        }
        throw new VerificationException("no v1 signature matches");
    }

    /** HMAC-SHA256 of {@code "{id}.{timestamp}.{body}"} under the key. */
    byte[] sign(String webhookId, String timestamp, byte[] body) {
        try {
            Mac mac = Mac.getInstance(ALGORITHM);
            mac.init(new SecretKeySpec(key, ALGORITHM));
            mac.update((webhookId + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8));
            mac.update(body);
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            // HmacSHA256 is required of every Java platform, and HMAC takes keys of any length.
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }
}
