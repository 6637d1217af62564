vcl 4.1;
# A shared cache in front of edge nodes, for deployments that run their own CDN tier (and for the tests).
# Personalized answers (POST, Cache-Control: private, no-store) pass; anonymous GET answers are cached for
# their s-maxage and purged by surrogate key. Placeholders in ${...} are filled in at deployment.

import std;

backend edge {
    .host = "${EDGE_HOST}";
    .port = "${EDGE_PORT}";
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (!std.ip(client.ip, "0.0.0.0") ~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.Surrogate-Key) {
            return (synth(400, "Surrogate-Key header required"));
        }
        # Every cached answer that lists the key (an offer, a region or a data version) goes.
        # The ban spec is split on spaces and takes backslashes as escapes: hence [[:space:]] and no quotes.
        ban("obj.http.Surrogate-Key ~ (^|[[:space:]])" + req.http.Surrogate-Key + "([[:space:]]|$)");
        return (synth(200, "Purged"));
    }
    # Origin cloaking: the edge trusts geo headers only with this secret, which only the CDN adds.
    unset req.http.X-Edgerec-CDN-Secret;
    set req.http.X-Edgerec-CDN-Secret = "${CDN_SECRET}";
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Shoppers' cookies say nothing about an anonymous answer; keeping them would make every answer a miss.
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "hit";
    } else {
        set resp.http.X-Cache = "miss";
    }
}
