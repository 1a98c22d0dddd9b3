// Swagger UI on this server's OpenAPI document. A file of its own rather than an inline script,
// so that the page's Content-Security-Policy allows scripts from this server only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    // Relative to the page, like the document's `servers`: the same server, whatever its address.
    url: new URL("api/v1/openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,           // Swagger UI would send the document to validator.swagger.io
    persistAuthorization: false,  // a token typed here is not kept in localStorage
    displayRequestDuration: true,
    docExpansion: "list",
  });
});
