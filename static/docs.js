// The API docs (/docs): Swagger UI over /openapi.json. A file of its own, not an inline
// script, so that /docs runs under a CSP that allows no inline script.
window.ui = SwaggerUIBundle({
  deepLinking: true,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  showExtensions: true,
  showCommonExtensions: true,
  url: "/openapi.json",
});
