// Starts Swagger UI from a file of our own, so the page needs no inline script (see the CSP).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.specUrl,
    dom_id: "#swagger-ui-container",
    validatorUrl: null,
    persistAuthorization: true,
  });
});
